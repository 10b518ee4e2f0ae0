"""Warming on a real Celery worker: throughput over the demo corpus, the cold-start time to a warm
cache, and a server tokenizer's misses one by one against eight at a time.

Run with `make bench-warming` (part of `make bench`). A scratch SQLite database (migrated, the
demo seeded: 119 documents, most of them Python's own pydoc topics) and a private redis-server
as cache and broker; one `celery worker --concurrency 1` process started as `make run` starts it.

1. Throughput: the cache is flushed, one full run (`request_warming(agent=None)`) is queued,
   timed from queueing to its row saying done; documents/s, chunks/s and tokens/s over the wall
   time, and over the run's own working time (it sleeps half the time by default, to leave the
   CPU to chat turns: TOKENCACHE_WARM_DUTY_CYCLE), at duty cycles 1.0 and 0.5.
2. Cold start: the cache is flushed (as a Redis restart leaves it) and the beat's check sent; the
   time until every chunk is cached again. Beat sends that check every 60 s, so a deployment adds
   up to a minute of noticing to the figure.
3. A `server:` tokenizer (the test suite's loopback vLLM stand-in, answering each /tokenize after
   20 ms, as a busy model server might): 64 misses in one lookup with one request at a time
   against eight, interleaved, median of 5.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _bench_module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_worker(env: dict[str, str], duty_cycle: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tokencache_project", "worker", "--concurrency", "1",
         "--without-mingle", "--without-gossip", "--loglevel", "WARNING", "--hostname", f"bench-{duty_cycle}@%h"],
        cwd=ROOT,
        env={**env, "TOKENCACHE_PROCESS_ROLE": "worker", "TOKENCACHE_WARM_DUTY_CYCLE": str(duty_cycle)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_for(check: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("the worker did not finish in time")
        time.sleep(0.05)


def throughput(duty_cycle: float, env: dict[str, str], flush: Any) -> dict[str, float]:
    from agents.models import KnowledgeDocument, WarmingRun
    from agents.warming import request_warming

    flush()
    worker = start_worker(env, duty_cycle)
    try:
        started = time.perf_counter()
        run = request_warming(agent=None, reason=WarmingRun.Reason.COMMAND)
        wait_for(lambda: WarmingRun.objects.get(pk=run.pk).status in ("done", "failed"))
        wall = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    run.refresh_from_db()
    documents = KnowledgeDocument.objects.filter(agent__enabled=True).count()
    return {
        "duty": duty_cycle, "documents": documents, "chunks": run.done_chunks, "tokens": run.tokens_written,
        "wall": wall, "work": run.seconds,
    }  # fmt: skip


def cold_start(env: dict[str, str], flush: Any) -> float:
    from agents.models import Chunk, WarmingRun
    from agents.tasks import check_cold_start
    from cachecore.keys import token_key
    from cachecore.store import default_store
    from cachecore.tokenizers import get_tokenizer

    chunks = list(Chunk.objects.select_related("document__agent"))
    keys = {token_key(get_tokenizer(c.document.agent.tokenizer_spec).fingerprint, c.content_hash) for c in chunks}
    worker = start_worker(env, 0.5)
    try:
        check_cold_start.apply()  # the marker of this Redis, as the first beat check writes it
        WarmingRun.objects.filter(reason=WarmingRun.Reason.COLD_START).delete()
        flush()  # what a restart without persistence leaves
        client = default_store().client
        started = time.perf_counter()
        check_cold_start.delay()
        wait_for(lambda: sum(client.exists(*batch) for batch in _batches(sorted(keys), 500)) == len(keys))
        return time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _batches(items: list[bytes], size: int) -> list[list[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def server_tokenizer(redis_url: str) -> tuple[float, float]:
    from cachecore.breaker import Breaker
    from cachecore.store import TokenStore
    from cachecore.tokenizers import ServerTokenizer
    from tests.support.fake_model_server import FakeModelServer

    server = FakeModelServer().start()
    try:
        tokenizers = {concurrency: ServerTokenizer(server.base_url) for concurrency in (1, 8)}
        for concurrency, tokenizer in tokenizers.items():
            tokenizer.CONCURRENT_REQUESTS = concurrency
        server.knobs.hang_seconds = 0.02
        store = TokenStore.from_url(redis_url, breaker=Breaker(name="bench", fail_max=5, reset_seconds=60))
        timings: dict[int, list[float]] = {1: [], 8: []}
        for rep in range(5):
            for concurrency in (1, 8) if rep % 2 else (8, 1):
                texts = [f"rep {rep} concurrency {concurrency} chunk {n} " * 20 for n in range(64)]
                started = time.perf_counter()
                batch = store.get_many(tokenizers[concurrency], texts, ttl=60)
                timings[concurrency].append(time.perf_counter() - started)
                assert batch.misses == 64
        for tokenizer in tokenizers.values():
            tokenizer.close()
        return statistics.median(timings[1]), statistics.median(timings[8])
    finally:
        server.stop()


def main() -> None:
    cache_bench, dashboards_bench, report = _bench_module("cache"), _bench_module("dashboards"), _bench_module("report")
    var_dir = Path(tempfile.mkdtemp(prefix="tokencache-bench-warm-"))
    redis_url, stop_redis = cache_bench.start_redis()
    try:
        dashboards_bench.configure(var_dir, redis_url)
        broker = os.environ["CELERY_BROKER_URL"]
        import io

        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        call_command("seed_demo", stdout=io.StringIO())
        import redis

        from cachecore.store import default_store

        redis.Redis.from_url(broker).flushdb()  # the seed's own warming tasks: this benchmark queues its own

        def flush() -> None:
            default_store().client.flushdb()

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        rows = [throughput(1.0, env, flush), throughput(0.5, env, flush)]
        cold = cold_start(env, flush)
        sequential, concurrent = server_tokenizer(redis_url)
    finally:
        stop_redis()

    lines = [
        "| duty cycle | documents | chunks | tokens | wall s | docs/s | tokens/s (wall) | working s "
        "| tokens/s (working) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['duty']:.1f} | {r['documents']} | {r['chunks']} | {r['tokens']:,} | {r['wall']:.2f} | "
            f"{r['documents'] / r['wall']:.0f} | {r['tokens'] / r['wall']:,.0f} | {r['work']:.2f} | "
            f"{r['tokens'] / r['work']:,.0f} |"
        )
    lines += [
        "",
        f"Cold start (cache flushed, beat's check sent, duty cycle 0.5): every chunk cached again after "
        f"**{cold:.2f} s** (+ up to 60 s until beat's next check).",
        "",
        "| server tokenizer, 64 misses, 20 ms per /tokenize | one at a time | 8 at a time | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| lookup time (median of 5) | {sequential * 1000:.0f} ms | {concurrent * 1000:.0f} ms | "
        f"x{sequential / concurrent:.1f} |",
    ]
    table = "\n".join(lines)
    print(table)
    report.write_section("warming", "## Warming on one Celery worker\n\n" + table + "\n")


if __name__ == "__main__":
    main()
