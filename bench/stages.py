"""A chat turn by stage, at contexts of about 2,000 and 8,000 tokens, four ways to get the tokens.

Run with `make bench-stages` (or `python bench/stages.py [--runs 15]`). The real chat service
(`run_turn`, the extractive backend) on the demo's documentation agent (Python's reference topics),
its top_k raised until the retrieved context reaches the size; a private Redis and a fresh SQLite
database. Each stage is timed by wrapping the function the turn calls for it: retrieval
(`search_chunks`), tokens (`get_many`), prompt (`build_prompt`), generation (the backend), storage
(the question and the answer written). Ways to get the chunks' tokens:

- hit: the production path, every chunk cached (stored digests, one MGET, binary values);
- miss: Redis emptied before each turn: tokenize, claim, write back;
- disabled: no cache, every chunk encoded (what the breaker's bypass does);
- prototype: the seed prototype's approach, a JSON list of IDs per key, MGET then json.loads
  (encode and SET JSON on a miss); its keys were document IDs, which only matters for staleness.

Medians over the runs, interleaved (each run does every way once). Exits 1 when the hit's tokens
stage is not at least 10x faster than encoding at ~8,000 tokens (issue 11's target for the cache core,
which bench/cache.py measures alone; here inside a turn).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from environment import bench_environment  # noqa: E402

QUESTION = "how do I use the with statement, exceptions and context managers in a function or a class"
SIZES = (2_000, 8_000)
WAYS = ("hit", "miss", "disabled", "prototype")
STAGES = ("retrieval", "tokens", "prompt", "generation", "storage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from tests.redis_process import RedisProcess

    redis_server = RedisProcess(maxmemory="256mb").start()
    try:
        with tempfile.TemporaryDirectory(prefix="tokencache-bench-stages-") as directory:
            os.environ.update(bench_environment(Path(directory), redis_server.url(0)))
            return measure(redis_server.url(0), args.runs, write=not args.no_write)
    finally:
        redis_server.stop()


def measure(redis_url: str, runs: int, *, write: bool) -> int:
    import django

    django.setup()
    import numpy as np
    import redis
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from agents import chat
    from agents.models import Agent
    from cachecore.store import LookupBatch, Outcome

    call_command("migrate", verbosity=0)
    call_command("seed_demo", verbosity=0)
    user = User.objects.filter(is_superuser=True).get()
    client = redis.Redis.from_url(redis_url)
    agent = Agent.objects.select_related("ttl_policy").get(slug="documentation")
    timings: dict[str, float] = defaultdict(float)
    production_get_many = chat.get_many

    def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                timings[stage] += (time.perf_counter() - started) * 1000

        return wrapper

    def disabled(tokenizer: Any, texts: list[str], **_: Any) -> Any:
        started = time.perf_counter()
        ids = [np.asarray(tokenizer.encode(text), dtype=np.uint32) for text in texts]
        return LookupBatch(ids, [Outcome.BYPASS] * len(texts), 0, time.perf_counter() - started)

    def prototype(tokenizer: Any, texts: list[str], *, ttl: int, digests: list[str] | None = None, **_: Any) -> Any:
        started = time.perf_counter()
        keys = [f"proto:{digest}" for digest in digests or []]
        values = client.mget(keys)
        ids, outcomes = [], []
        for key, text, value in zip(keys, texts, values, strict=True):
            if value is None:
                encoded = [int(i) for i in tokenizer.encode(text)]
                client.set(key, json.dumps(encoded), ex=ttl)
                ids.append(np.asarray(encoded, dtype=np.uint32))
                outcomes.append(Outcome.MISS)
            else:
                ids.append(np.asarray(json.loads(value), dtype=np.uint32))
                outcomes.append(Outcome.HIT)
        return LookupBatch(ids, outcomes, 1, time.perf_counter() - started)

    getters = {"hit": production_get_many, "miss": production_get_many, "disabled": disabled, "prototype": prototype}
    chat.search_chunks = timed("retrieval", chat.search_chunks)  # type: ignore[assignment]
    chat.build_prompt = timed("prompt", chat.build_prompt)  # type: ignore[assignment]
    chat._store_user_message = timed("storage", chat._store_user_message)  # type: ignore[assignment]
    chat._store_answer = timed("storage", chat._store_answer)  # type: ignore[assignment]
    backend_for = chat.backend_for

    def timed_backend(agent: Any) -> Any:
        backend = backend_for(agent)
        backend.generate = timed("generation", backend.generate)
        return backend

    chat.backend_for = timed_backend  # type: ignore[assignment]

    def turn(way: str) -> tuple[dict[str, float], int]:
        if way == "miss":
            client.flushdb()
        chat.get_many = timed("tokens", getters[way])  # type: ignore[assignment]
        timings.clear()
        started = time.perf_counter()
        result = chat.run_turn(user=user, agent=agent, message=QUESTION)
        figures = {**timings, "total": (time.perf_counter() - started) * 1000}
        return figures, int(result.answer_message.context_tokens)

    rows: list[str] = []
    checks: list[tuple[bool, str]] = []
    for size in SIZES:
        agent.prompt_token_budget = size + 1_000
        for top_k in range(1, 200):
            agent.top_k = top_k
            _, context = turn("disabled")
            if context >= size:
                break
        samples: dict[str, list[dict[str, float]]] = defaultdict(list)
        turn("hit")
        turn("prototype")  # both caches warm
        for _ in range(runs):
            for way in WAYS:
                samples[way].append(turn(way)[0])
                if way == "miss":
                    turn("hit")  # warm again for the next hit
        median = {
            way: {stage: statistics.median(s.get(stage, 0.0) for s in samples[way]) for stage in (*STAGES, "total")}
            for way in WAYS
        }
        for way in WAYS:
            m = median[way]
            rows.append(
                f"| ~{context:,} ({top_k} chunks) | {way} | "
                + " | ".join(f"{m[stage]:.2f}" for stage in (*STAGES, "total"))
                + f" | {m['tokens'] / max(median['hit']['tokens'], 1e-9):.1f}x |"
            )
        if size == SIZES[-1]:
            ratio = median["disabled"]["tokens"] / max(median["hit"]["tokens"], 1e-9)
            checks.append((ratio >= 10, f"hit tokens stage {ratio:.1f}x faster than encoding at ~{context:,} tokens"))
    markdown = (
        "## The turn by stage\n\n"
        f"`python bench/stages.py --runs {runs}`: run_turn on the documentation agent (extractive backend), "
        "medians in ms, the ways interleaved; tokens vs hit is the tokens stage over the hit's.\n\n"
        "| context tokens | tokens from | retrieval | tokens | prompt | generation | storage | total | "
        "tokens vs hit |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows)
        + "\n\n"
        + "\n".join(f"- {'met' if ok else 'MISSED'}: {text} (target >= 10x)" for ok, text in checks)
        + "\n"
    )
    print(markdown)
    if write:
        from report import write_section

        write_section("stages", markdown)
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
