"""Token cache benchmark: the hit path against re-encoding, a bare GET and the prototype.

Run with `make bench-cache`. Uses Python's own offline documentation
(`pydoc_data.topics`) as English text, cut into chunks of ~300 tokens, and builds
contexts of about 500, 2,000, 8,000 and 32,000 tokens. Starts a private
redis-server on a free loopback port (or uses REDIS_URL if set) and stops it.

Every figure is the lower quartile of interleaved repetitions (each repetition runs every
method once, in a random order, with the garbage collector paused), so that a noisy
neighbour slows all columns alike.
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


def main() -> None:
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

    methods: dict[str, Callable[[], object]] = {
        "encode": lambda: tokenizer.encode(context),
        "hit": lambda: store.get_many(tokenizer, texts, ttl=TTL, digests=digests),
        "hit_hashing": lambda: store.get_many(tokenizer, texts, ttl=TTL),
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
            started = time.perf_counter()
            methods[name]()
            samples[name].append(time.perf_counter() - started)
        gc.collect()
    gc.enable()
    miss = []
    for _ in range(10 if tokens <= 8_000 else 3):
        store.invalidate_texts(tokenizer, texts)
        started = time.perf_counter()
        store.get_many(tokenizer, texts, ttl=TTL, digests=digests)
        miss.append(time.perf_counter() - started)
    figures = {name: typical_us(values) for name, values in samples.items()}
    figures["miss"] = typical_us(miss)
    return tokens, len(texts), value_bytes, len(naive_value), partial.round_trips, figures


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
    for tokens, chunks, value_bytes, naive_bytes, partial_trips, f in rows:
        print(
            f"{tokens:>7} {chunks:>6} | {f['encode']:>8.0f} {f['hit']:>8.0f} {f['hit_hashing']:>8.0f} "
            f"{f['get']:>8.0f} {f['naive']:>8.0f} {f['miss']:>8.0f} {f['decode']:>7.0f} | "
            f"{value_bytes / tokens:>5.2f} {naive_bytes / tokens:>8.2f} | {f['encode'] / f['hit']:>6.1f}x "
            f"{f['hit'] / f['get']:>6.2f}x {f['naive'] / f['hit']:>8.2f}x | {1:>6} {partial_trips:>7}"
        )
    print()
    print("encode:  tiktoken encode of the whole context (what a cache-less prompt builder pays)")
    print("hit:     get_many, every chunk cached, digests stored with the chunks: one MGET, checked, decoded")
    print("         to uint32 arrays, metrics counted; hit+sha: the same, hashing every chunk's text first")
    print("GET:     a bare redis-py GET of as many bytes as the context's cached values")
    print("naive:   the prototype: GET of a JSON list of ints under a key of document IDs, json.loads")
    print("miss:    get_many with every chunk missing: tokenize, claim, write back (3 round trips)")
    print("decode:  codec.decode_many of the context's values alone (checksums + unpacking)")
    eight = next(row for row in rows if row[0] >= 8_000)
    f = eight[5]
    print()
    print(f"targets at {eight[0]} tokens:")

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"  hit >= 12x faster than encode:  {f['encode'] / f['hit']:.1f}x  {verdict(f['encode'] >= 12 * f['hit'])}")
    print(f"  hit within 1.3x of a bare GET:  {f['hit'] / f['get']:.2f}x  {verdict(f['hit'] <= 1.3 * f['get'])}")
    print(f"  <= 3.0 bytes per token:         {eight[2] / eight[0]:.2f}   {verdict(eight[2] <= 3.0 * eight[0])}")


if __name__ == "__main__":
    main()
