"""Token cache benchmark: the hit path against re-encoding, a bare GET and the prototype.

Run with `make bench-cache`. Uses Python's own offline documentation
(`pydoc_data.topics`) as English text, cut into chunks of ~300 tokens, and builds
contexts of about 500, 2,000, 8,000 and 32,000 tokens. Starts a private
redis-server on a free loopback port (or uses REDIS_URL if set) and stops it.

How it measures, and why:
- Interleaved: each repetition runs every method once, in a random order, so that a noisy
  neighbour slows all columns alike and no method always follows a similar one. The
  garbage collector is paused while timing, and run between repetitions.
- Server awake: each timed call is preceded by an untimed PING. On a VM, a redis-server
  that has had nothing to do for a millisecond or so (while tiktoken encodes for 3 ms,
  or gc.collect() runs) is parked by the hypervisor, and the next request pays
  100-250 us to wake it (cpuidle "haltpoll"). That wake-up is a property of an idle
  test machine, not of the code, and it lands on whichever Redis method runs next: it
  is why a bare GET read ~200 us here against ~43 us in a tight loop, and it would
  make any ratio to it look closer to 1 than it is. The PING is the same for every
  method, so the columns stay comparable; our own CPU caches stay as cold as the
  interleaving leaves them, as they would be inside a chat turn.
- Lower quartile (q1) in the main table: on a shared 2-core machine the upper half
  mostly measures the neighbours. The table after it gives q1 and median for the hit
  and the bare GET at ~8,000 tokens under three conditions: interleaved with the
  server awake (the main table), a tight loop, and with the server left idle for 3 ms
  before each call (what an otherwise idle deployment sees).
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import redis

from cachecore import codec
from cachecore.breaker import Breaker
from cachecore.keys import text_digest, token_key
from cachecore.store import TokenStore
from cachecore.tokenizers import get_tokenizer

CHUNK_TOKENS = 300
CONTEXTS = (500, 2_000, 8_000, 32_000)
TTL = 3600


def start_redis() -> tuple[str, Callable[[], None]]:
    """REDIS_URL if given, else a private redis-server on a free port (and how to stop it)."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], lambda: None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="tokencache-bench-")
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", directory, "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(500):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.01)

    def stop() -> None:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)

    return f"redis://127.0.0.1:{port}/0", stop


def chunks_of(tokenizer, total_tokens: int) -> list[str]:  # type: ignore[no-untyped-def]
    from pydoc_data.topics import topics

    chunks: list[str] = []
    tokens = 0
    for name in sorted(topics):
        ids = tokenizer.encode(topics[name])
        for start in range(0, len(ids), CHUNK_TOKENS):
            piece = ids[start : start + CHUNK_TOKENS]
            if len(piece) < CHUNK_TOKENS // 2:
                continue
            chunks.append(tokenizer.decode(piece))
            tokens += len(piece)
            if tokens >= total_tokens:
                return chunks
    return chunks


def typical_us(samples: list[float]) -> float:
    """Lower quartile: on a shared 2-core machine the upper half mostly measures the neighbours
    (and whether redis-server was scheduled on the other core), not the code."""
    return statistics.quantiles(samples, n=4)[0] * 1e6


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def main() -> int:
    tokenizer = get_tokenizer("tiktoken:cl100k_base")
    url, stop = start_redis()
    try:
        run(tokenizer, url)
    finally:
        stop()


def measure(tokenizer, store: TokenStore, client: redis.Redis, target: int) -> tuple:  # type: ignore[no-untyped-def]
    """Figures for one context of about `target` tokens."""
    texts = chunks_of(tokenizer, target)
    digests = [text_digest(text) for text in texts]
    keys = [token_key(tokenizer.fingerprint, digest) for digest in digests]
    context = "".join(texts)
    ids = [tokenizer.encode(text) for text in texts]
    tokens = sum(chunk.size for chunk in ids)
    store.get_many(tokenizer, texts, ttl=TTL)
    values = client.mget(keys)
    value_bytes = sum(len(value) for value in values)
    client.set("bench:bare", os.urandom(value_bytes))
    naive_key = "doc:" + ",".join(str(i) for i in range(len(texts)))
    naive_value = json.dumps(np.concatenate(ids).tolist())
    client.set(naive_key, naive_value)
    assert store.get_many(tokenizer, texts, ttl=TTL, digests=digests).round_trips == 1
    store.invalidate_texts(tokenizer, texts[: max(1, len(texts) // 10)])
    partial = store.get_many(tokenizer, texts, ttl=TTL)

    # `.items` as agents/chat.py reads them: the arrays plus the per-text (ids, outcome) pairs.
    methods: dict[str, Callable[[], object]] = {
        "encode": lambda: tokenizer.encode(context),
        "hit": lambda: store.get_many(tokenizer, texts, ttl=TTL, digests=digests).items,
        "hit_hashing": lambda: store.get_many(tokenizer, texts, ttl=TTL).items,
        "get": lambda: client.get("bench:bare"),
        "naive": lambda: json.loads(client.get(naive_key)),  # type: ignore[arg-type]
        "decode": lambda: codec.decode_many(values, keys),
    }
    samples: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    shuffler = random.Random(target)
    repetitions = 300 if tokens <= 8_000 else 80
    gc.disable()  # as timeit does: a collection triggered by one method must not bill another
    for _ in range(repetitions):
        # A random order: a method run right after a similar one finds warm caches.
        shuffler.shuffle(names)
        for name in names:
            client.ping()  # untimed: wake redis-server (see the module docstring)
            started = time.perf_counter()
            methods[name]()
            samples[name].append(time.perf_counter() - started)
        gc.collect()
    gc.enable()
    conditions = compare_conditions(methods["hit"], methods["get"], client) if 8_000 <= tokens < 16_000 else {}
    miss = []
    for _ in range(10 if tokens <= 8_000 else 3):
        store.invalidate_texts(tokenizer, texts)
        started = time.perf_counter()
        store.get_many(tokenizer, texts, ttl=TTL, digests=digests)
        miss.append(time.perf_counter() - started)
    figures = {name: typical_us(values) for name, values in samples.items()}
    figures["miss"] = typical_us(miss)
    conditions["interleaved, server awake"] = {
        name: (typical_us(samples[name]), median_us(samples[name])) for name in ("hit", "get")
    }
    return tokens, len(texts), value_bytes, len(naive_value), partial.round_trips, figures, conditions


def compare_conditions(
    hit: Callable[[], object], get: Callable[[], object], client: redis.Redis
) -> dict[str, dict[str, tuple[float, float]]]:
    """(q1, median) of the hit and the bare GET in a tight loop and with an idle server."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    gc.disable()
    try:
        tight: dict[str, list[float]] = {"hit": [], "get": []}
        for _ in range(5):  # alternate blocks of 200 back-to-back calls, hit and GET
            for name, method in (("hit", hit), ("get", get)):
                for _ in range(200):
                    started = time.perf_counter()
                    method()
                    tight[name].append(time.perf_counter() - started)
        out["tight loop"] = {name: (typical_us(s), median_us(s)) for name, s in tight.items()}
        idle: dict[str, list[float]] = {"hit": [], "get": []}
        for _ in range(150):
            for name, method in (("hit", hit), ("get", get)):
                time.sleep(0.003)  # redis-server idle for 3 ms: parked by the hypervisor
                started = time.perf_counter()
                method()
                idle[name].append(time.perf_counter() - started)
        out["server idle 3 ms before each call"] = {name: (typical_us(s), median_us(s)) for name, s in idle.items()}
    finally:
        gc.enable()
    return out


def run(tokenizer, url: str) -> None:  # type: ignore[no-untyped-def]
    store = TokenStore.from_url(url, breaker=Breaker(name="bench"))
    client = redis.Redis.from_url(url)
    rows = [measure(tokenizer, store, client, target) for target in CONTEXTS]

    header = (
        f"{'tokens':>7} {'chunks':>6} | {'encode':>8} {'hit':>8} {'hit+sha':>8} {'GET':>8} {'naive':>8} "
        f"{'miss':>8} {'decode':>7} | {'B/tok':>5} {'naiveB/t':>8} | {'enc/hit':>7} {'hit/GET':>7} "
        f"{'naive/hit':>9} | {'RT hit':>6} {'RT part':>7}"
    )
    print("Token cache benchmark: cl100k_base, pydoc_data.topics, ~300-token chunks; µs, lower quartile")
    print(header)
    print("-" * len(header))
    for tokens, chunks, value_bytes, naive_bytes, partial_trips, f, _ in rows:
        print(
            f"{tokens:>7} {chunks:>6} | {f['encode']:>8.0f} {f['hit']:>8.0f} {f['hit_hashing']:>8.0f} "
            f"{f['get']:>8.0f} {f['naive']:>8.0f} {f['miss']:>8.0f} {f['decode']:>7.0f} | "
            f"{value_bytes / tokens:>5.2f} {naive_bytes / tokens:>8.2f} | {f['encode'] / f['hit']:>6.1f}x "
            f"{f['hit'] / f['get']:>6.2f}x {f['naive'] / f['hit']:>8.2f}x | {1:>6} {partial_trips:>7}"
        )
    print()
    print("encode:  tiktoken encode of the whole context (what a cache-less prompt builder pays)")
    print("hit:     get_many, every chunk cached, digests stored with the chunks: one MGET, checked, decoded")
    print("         to uint32 arrays, metrics counted, .items read; hit+sha: the same, hashing every text first")
    print("GET:     a bare redis-py client.get of a value as long as the context's cached values together")
    print("naive:   the prototype: GET of a JSON list of ints under a key of document IDs, json.loads")
    print("miss:    get_many with every chunk missing: tokenize, claim, write back (3 round trips)")
    print("decode:  codec.decode_many of the context's values alone (checksums + unpacking)")
    print("All runs: an untimed PING before each timed call (server awake); see the module docstring.")
    eight = next(row for row in rows if row[0] >= 8_000)
    f, conditions = eight[5], eight[6]
    print()
    print(f"hit and bare GET at {eight[0]} tokens by condition (µs, q1 / median):")
    for condition, pair in conditions.items():
        (hit_q1, hit_med), (get_q1, get_med) = pair["hit"], pair["get"]
        print(
            f"  {condition:<34} hit {hit_q1:>5.0f} / {hit_med:>5.0f}   GET {get_q1:>5.0f} / {get_med:>5.0f}"
            f"   hit/GET {hit_q1 / get_q1:.2f}x / {hit_med / get_med:.2f}x"
        )
    print()
    print(f"targets at {eight[0]} tokens (main table, q1):")

    verdicts = {
        # Issue 11's target for the production hit path, then the cache core's own stricter ones.
        f"hit >= 10x faster than encode:  {f['encode'] / f['hit']:.1f}x": f["encode"] >= 10 * f["hit"],
        f"hit >= 12x faster than encode:  {f['encode'] / f['hit']:.1f}x": f["encode"] >= 12 * f["hit"],
        f"hit within 1.3x of a bare GET:  {f['hit'] / f['get']:.2f}x": f["hit"] <= 1.3 * f["get"],
        f"<= 3.0 bytes per token:         {eight[2] / eight[0]:.2f}": eight[2] <= 3.0 * eight[0],
    }
    for text, ok in verdicts.items():
        print(f"  {text}  {'ok' if ok else 'MISSED'}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
