"""Dashboards and admin lists with history: server time per page at 100,000 messages.

Run with `make bench-dashboards` (part of `make bench`). Builds a scratch SQLite database
(migrated, the demo seeded), adds 100,000 messages over 30 days for the 3 demo agents
(50,000 questions and their answers, with cache records, timings and feedback), rolls
them up (the first run's 30-day backfill: what `manage.py rollup_cache_stats` does on
an existing deployment), then times every dashboard page, data endpoint and admin list
through Django's test client: the median and the slowest of 7 calls after one warm-up,
in one process, with the number of SQL queries. The target is under 300 ms per page.

`--keep DIR` leaves the database (and its var dir) in DIR, to run a server against it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from environment import bench_environment  # noqa: E402

TARGET_MS = 300.0


def _start_redis():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_cache", ROOT / "bench" / "cache.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.start_redis()


def configure(var_dir: Path, redis_url: str) -> None:
    os.environ.update(bench_environment(var_dir, redis_url))
    import django

    django.setup()


def seed(*, messages: int, days: int, rng: random.Random) -> dict[str, float]:
    import io

    from django.contrib.auth.models import User
    from django.core.management import call_command

    from agents.models import Agent, Chunk, Conversation, Message
    from cachecore.models import BreakerProcess

    timings: dict[str, float] = {}
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # DEBUG=0 serves hashed names
    call_command("seed_demo", stdout=io.StringIO())
    timings["migrate + seed_demo"] = time.perf_counter() - started

    started = time.perf_counter()
    agents = list(Agent.objects.order_by("slug"))
    user = User.objects.get(username="support")
    chunk_ids = {a.pk: list(Chunk.objects.filter(document__agent=a).values_list("pk", flat=True)) for a in agents}
    now = datetime.now(UTC)
    conversations_per_agent = 300
    # auto_now_add would stamp every row with "now": the history needs its own times.
    created_fields = [Conversation._meta.get_field("created"), Message._meta.get_field("created")]
    for field in created_fields:
        field.auto_now_add = False  # type: ignore[attr-defined]
    try:
        conversations = Conversation.objects.bulk_create(
            Conversation(agent=a, user=user, title=f"bench {i}", created=now - timedelta(days=days), updated=now)
            for a in agents
            for i in range(conversations_per_agent)
        )
        batch: list[Message] = []
        for index in range(messages // 2):
            conversation = conversations[rng.randrange(len(conversations))]
            at = now - timedelta(seconds=rng.uniform(0, days * 86400))
            ids = rng.sample(chunk_ids[conversation.agent_id], k=min(4, len(chunk_ids[conversation.agent_id])))
            outcomes = [rng.choices(("hit", "miss", "bypass", "corrupt"), (70, 27, 2.9, 0.1))[0] for _ in ids]
            hits, corrupt = outcomes.count("hit"), outcomes.count("corrupt")
            misses, bypassed = outcomes.count("miss") + corrupt, outcomes.count("bypass")
            lookup = rng.uniform(0.3, 1.5) if misses + bypassed == 0 else rng.uniform(2, 12)
            retrieval, generation = rng.uniform(1, 8), rng.uniform(20, 900)
            failed = rng.random() < 0.01
            batch.append(Message(conversation=conversation, role="user", content="a question", created=at))
            batch.append(
                Message(
                    conversation=conversation,
                    role="assistant",
                    content="an answer [1]",
                    status="error" if failed else "ok",
                    error_code="model_unavailable" if failed else "",
                    created=at + timedelta(seconds=1),
                    chunk_outcomes=[{"chunk_id": c, "outcome": o} for c, o in zip(ids, outcomes, strict=True)],
                    cache_hits=0 if failed else hits,
                    cache_misses=0 if failed else misses,
                    cache_bypassed=0 if failed else bypassed,
                    tokens_from_cache=0 if failed else hits * 250,
                    tokens_tokenized=0 if failed else (misses + bypassed) * 250,
                    context_tokens=0 if failed else len(ids) * 250,
                    retrieval_ms=retrieval,
                    lookup_ms=lookup,
                    generation_ms=generation,
                    total_ms=retrieval + lookup + generation + 1,
                    backend="extractive",
                    feedback=rng.choices((None, 1, -1), (80, 15, 5))[0],
                )
            )
            if len(batch) >= 10_000 or index == messages // 2 - 1:
                Message.objects.bulk_create(batch)
                batch = []
    finally:
        for field in created_fields:
            field.auto_now_add = True  # type: ignore[attr-defined]
    BreakerProcess.objects.bulk_create(
        [
            BreakerProcess(
                host="bench", pid=1, role="web", state="closed", consecutive_failures=0, last_change=now, last_seen=now
            ),
            BreakerProcess(
                host="bench", pid=2, role="worker", state="open", consecutive_failures=5, last_change=now, last_seen=now
            ),
            BreakerProcess(
                host="bench",
                pid=3,
                role="web",
                state="closed",
                consecutive_failures=0,
                last_change=now - timedelta(minutes=10),
                last_seen=now - timedelta(minutes=10),  # not seen for three heartbeats: stale
            ),
        ]
    )
    timings[f"{Message.objects.count():,} messages inserted"] = time.perf_counter() - started

    from dashboards.rollup import run_rollup

    started = time.perf_counter()
    report = run_rollup()
    timings[f"rollup backfill ({report.answers:,} answers, {report.minutes:,} minute rows)"] = (
        time.perf_counter() - started
    )
    started = time.perf_counter()
    run_rollup()
    timings["rollup, one beat run after it"] = time.perf_counter() - started
    return timings


def measure(paths: list[tuple[str, str, str]], *, repeat: int = 7) -> list[tuple[str, str, int, float, float, int]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    clients = {}
    for username in ("admin", "viewer"):
        client = Client()
        client.force_login(User.objects.get(username=username))
        clients[username] = client
    results = []
    for label, who, path in paths:
        client = clients[who]
        status = client.get(path).status_code  # warm-up: templates, caches
        samples = []
        queries: list[str] = []

        def count(execute, sql, params, many, context, queries=queries):  # type: ignore[no-untyped-def]
            queries.append(sql)
            return execute(sql, params, many, context)

        # Django resets connection.queries at every request start: count through a wrapper instead.
        with connection.execute_wrapper(count):
            client.get(path)
        for _ in range(repeat):
            started = time.perf_counter()
            client.get(path)
            samples.append((time.perf_counter() - started) * 1000)
        results.append((label, path, status, statistics.median(samples), max(samples), len(queries)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep", type=Path, help="keep the scratch database in this directory")
    args = parser.parse_args()

    var_dir = args.keep or Path(tempfile.mkdtemp(prefix="tokencache-bench-dash-"))
    var_dir.mkdir(parents=True, exist_ok=True)
    redis_url, stop_redis = _start_redis()
    try:
        configure(var_dir, redis_url)
        timings = seed(messages=args.messages, days=args.days, rng=random.Random(9))
        from agents.models import Agent, Message, TTLPolicy

        policy = TTLPolicy.objects.order_by("pk").first()
        assert policy is not None
        message = Message.objects.filter(role="assistant").order_by("-pk").first()
        assert message is not None
        agent = Agent.objects.get(slug="support")
        pages = [
            ("dashboard overview (24 h)", "viewer", "/dashboards/"),
            ("dashboard overview (30 days)", "viewer", "/dashboards/?window=month"),
            ("dashboard poll fragment", "viewer", "/dashboards/?fragment=1"),
            ("dashboard live state", "viewer", "/dashboards/live/"),
            ("dashboard agent", "viewer", f"/dashboards/agents/{agent.slug}/"),
            ("dashboard TTL policy", "viewer", f"/dashboards/policies/{policy.pk}/"),
            ("data: figures.json", "viewer", "/dashboards/data/figures.json"),
            ("data: hit-rate-month.csv", "viewer", "/dashboards/data/hit-rate-month.csv"),
            ("data: agents.csv (30 days)", "viewer", "/dashboards/data/agents.csv?window=month"),
            ("admin index", "admin", "/admin/"),
            ("admin agents list", "admin", "/admin/agents/agent/"),
            ("admin agents sorted by hit rate", "admin", "/admin/agents/agent/?o=-4"),
            ("admin TTL policies list", "admin", "/admin/agents/ttlpolicy/"),
            ("admin TTL policy form", "admin", f"/admin/agents/ttlpolicy/{policy.pk}/change/"),
            ("admin messages list", "admin", "/admin/agents/message/"),
            ("admin message", "admin", f"/admin/agents/message/{message.pk}/change/"),
            ("admin conversations list", "admin", "/admin/agents/conversation/"),
            ("admin documents list", "admin", "/admin/agents/knowledgedocument/"),
            ("admin process breakers", "admin", "/admin/cachecore/breakerprocess/"),
        ]
        results = measure(pages)
    finally:
        stop_redis()
        if args.keep is None:
            shutil.rmtree(var_dir, ignore_errors=True)

    print()
    print(f"Set-up (scratch SQLite, {args.messages:,} messages over {args.days} days, 3 agents)")
    for label, seconds in timings.items():
        print(f"  {label:<60} {seconds:8.1f} s")
    print()
    print(f"Server time per page (Django test client, median and max of 7; target < {TARGET_MS:.0f} ms)")
    print(f"  {'page':<34} {'status':>6} {'median ms':>10} {'max ms':>8} {'queries':>8}  ok")
    slow = 0
    for label, _path, status, median, worst, queries in results:
        ok = status == 200 and median < TARGET_MS
        slow += not ok
        print(f"  {label:<34} {status:>6} {median:>10.1f} {worst:>8.1f} {queries:>8}  {'yes' if ok else 'NO'}")
    print()
    print("every page under target" if not slow else f"{slow} page(s) over target or failing")


if __name__ == "__main__":
    main()
