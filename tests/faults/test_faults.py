"""Faults injected into real processes under a small chat load; nothing may be lost.

Each scenario starts uvicorn (tokencache_project.asgi) on a seeded SQLite file, a private
Redis for the token cache and the loopback model server answering the `support` agent, runs
4 clients for a few seconds over the JSON API, the streamed OpenAI-compatible API and the
websocket, injects one fault midway, then checks:
- every question stored has an answer or an error answer row (read from the database file);
- no turn failed but in the documented way (the model down: `model_unavailable`, stored);
- the system recovers (Redis used again, the model answering again), and how fast.
Each prints one `[faults]` line of figures and keeps it in var/faults.json (docs/reliability.md).
Timings are measured and printed, never asserted. Run by `make test-faults` (the `faults` marker).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from tests.faults.conftest import Deployment, record
from tests.support.chat_load import LoadResult, percentile
from tests.support.processes import ROOT

pytestmark = pytest.mark.faults

Factory = Callable[..., Deployment]


def ms(values: list[float], q: float) -> str:
    value = percentile(values, q)
    return "-" if value != value else f"{value * 1000:.0f} ms"


def five_xx(result: LoadResult) -> dict[str, int]:
    return {k: v for k, v in result.outcomes().items() if k.startswith("http 5")}


def assert_all_answered(deployment: Deployment, result: LoadResult) -> int:
    left = deployment.settle()
    assert left == 0, f"{left} question(s) without an answer row; answers: {deployment.answer_rows()}"
    assert result.ok > 0
    return left


def test_redis_killed_then_restarted(deployment_factory: Factory) -> None:
    """Inject: SIGKILL of the cache's Redis 2 s into an 10 s load, started again (empty) 3 s later.
    Expect: every turn answered (the cache bypassed), Redis used again soon after it returns."""
    d = deployment_factory()
    join = d.load_in_background(10.0)
    time.sleep(2.0)
    before = d.cache_lookups()
    assert d.cache._process is not None
    d.cache._process.kill()
    d.cache._process.wait()
    killed = time.monotonic()
    time.sleep(3.0)
    d.cache.start()
    back = time.monotonic()
    recovered = d.wait_cache_used_again(back)
    result = join()
    assert result.outcomes() == {"ok": len(result.turns)}, result.outcomes()
    assert_all_answered(d, result)
    assert recovered is not None, "the cache was not used again within 60 s of Redis returning"
    record(
        "redis killed then restarted",
        turns=len(result.turns),
        ok=result.ok,
        five_xx=sum(five_xx(result).values()),
        lost=0,
        chunks_bypassed=int(d.cache_lookups()["bypass"] - before["bypass"]),
        p99_during=ms(result.latencies(since=killed, until=back), 99),
        p99_after=ms(result.latencies(since=back), 99),
        cache_used_again_after=f"{recovered:.1f} s",
    )


def test_redis_stalled(deployment_factory: Factory) -> None:
    """Inject: CLIENT PAUSE ALL for 4 s on the cache's Redis, 2 s into an 8 s load.
    Expect: every turn answered (lookups give up after the 0.25 s read timeout), Redis used again."""
    d = deployment_factory()
    join = d.load_in_background(8.0)
    time.sleep(2.0)
    before = d.cache_lookups()
    d.cache.pause(4000)
    paused = time.monotonic()
    time.sleep(4.0)
    back = time.monotonic()
    recovered = d.wait_cache_used_again(back)
    result = join()
    assert result.outcomes() == {"ok": len(result.turns)}, result.outcomes()
    assert_all_answered(d, result)
    assert recovered is not None, "the cache was not used again within 60 s of the pause ending"
    record(
        "redis stalled (CLIENT PAUSE 4 s)",
        turns=len(result.turns),
        ok=result.ok,
        five_xx=sum(five_xx(result).values()),
        lost=0,
        chunks_bypassed=int(d.cache_lookups()["bypass"] - before["bypass"]),
        p99_during=ms(result.latencies(since=paused, until=back), 99),
        max_during=ms(result.latencies(since=paused, until=back), 100),
        p99_after=ms(result.latencies(since=back), 99),
        cache_used_again_after=f"{recovered:.1f} s",
    )


def test_redis_full(deployment_factory: Factory) -> None:
    """Inject: the cache's Redis full (maxmemory 2 MB, noeviction, filled with other keys), so
    every write is refused with OOM; 4 s later maxmemory is raised.
    Expect: every turn answered; the cache written and read again once there is room."""
    d = deployment_factory(redis_options={"maxmemory": "2mb", "extra": ["--maxmemory-policy", "noeviction"]})
    client = d.cache.client()
    filler = b"x" * 10_000
    full_at = None
    for n in range(1000):
        try:
            client.set(f"filler:{n}", filler)
        except redis.exceptions.OutOfMemoryError:  # OOM command not allowed when used memory > 'maxmemory'
            full_at = n
            break
    assert full_at is not None, "Redis never said it was full"
    before = d.cache_lookups()
    join = d.load_in_background(8.0)
    full = time.monotonic()
    time.sleep(4.0)
    client.config_set("maxmemory", "64mb")
    back = time.monotonic()
    recovered = d.wait_cache_used_again(back)
    result = join()
    assert result.outcomes() == {"ok": len(result.turns)}, result.outcomes()
    assert_all_answered(d, result)
    assert recovered is not None, "the cache was not used again within 60 s of Redis having room"
    record(
        "redis full (2 MB, noeviction)",
        refused_after=f"{full_at} x 10 kB of other keys",
        turns=len(result.turns),
        ok=result.ok,
        five_xx=sum(five_xx(result).values()),
        lost=0,
        chunks_bypassed=int(d.cache_lookups()["bypass"] - before["bypass"]),
        p99_during=ms(result.latencies(since=full, until=back), 99),
        p99_after=ms(result.latencies(since=back), 99),
        cache_used_again_after=f"{recovered:.1f} s",
    )


MODEL_DOWN = {"http 503 model_unavailable", "stream model_unavailable", "ws model_unavailable"}


def test_model_server_down(deployment_factory: Factory) -> None:
    """Inject: the model server stops listening 2 s into a 10 s load, and listens again 3 s later.
    Expect: turns meanwhile end as `model_unavailable` (503; an error answer row is stored), no
    other error, and answers again once it is back (the model breaker resets after 2 s here)."""
    d = deployment_factory()
    join = d.load_in_background(10.0)
    time.sleep(2.0)
    d.model.stop()
    down = time.monotonic()
    time.sleep(3.0)
    d.model.start()
    back = time.monotonic()
    result = join()
    unexpected = {k: v for k, v in result.outcomes().items() if k != "ok" and k not in MODEL_DOWN}
    assert not unexpected, result.outcomes()
    assert_all_answered(d, result)
    answered_again = d.answering_again(result, back)
    rows = d.answer_rows()
    failed = len(result.turns) - result.ok
    assert rows.get("model_unavailable", 0) >= failed, rows
    record(
        "model server down 3 s",
        turns=len(result.turns),
        ok=result.ok,
        model_unavailable=failed,
        other_errors=0,
        error_rows=rows.get("model_unavailable", 0),
        lost=0,
        p99_after=ms(result.latencies(since=back), 99),
        answering_again_after=f"{answered_again:.1f} s",
        down_for="3.0 s",
    )
    assert down < back


def test_model_server_slow(deployment_factory: Factory) -> None:
    """Inject: for 3 s the model server waits 1.5 s before answering each request, then streams at 0.2 s
    between pieces (well inside the read timeout).
    Expect: every turn is answered, later; none fails, none is lost; latency is back to normal after."""
    d = deployment_factory()
    join = d.load_in_background(9.0)
    time.sleep(2.0)
    d.model.knobs.hang_seconds = 1.5
    d.model.knobs.chunk_delay_seconds = 0.2
    slow = time.monotonic()
    time.sleep(3.0)
    d.model.knobs.hang_seconds = 0.0
    d.model.knobs.chunk_delay_seconds = 0.0
    fast = time.monotonic()
    result = join()
    assert result.outcomes() == {"ok": len(result.turns)}, result.outcomes()
    assert_all_answered(d, result)
    during, after = result.latencies(since=slow, until=fast), result.latencies(since=fast + 2.0)
    record(
        "model server slow 3 s (1.5 s to answer, 0.2 s between pieces)",
        turns=len(result.turns),
        ok=result.ok,
        lost=0,
        p99_during=ms(during, 99),
        p99_after=ms(after, 99),
    )


def test_model_server_cuts_streams(deployment_factory: Factory) -> None:
    """Inject: for 3 s the model server closes every stream after 3 chunks.
    Expect: those turns end with a stated error (stored as an error answer), none hangs, none is
    lost; answers again once streams complete."""
    d = deployment_factory()
    join = d.load_in_background(8.0)
    time.sleep(2.0)
    d.model.knobs.close_after_chunks = 3
    cut = time.monotonic()
    time.sleep(3.0)
    d.model.knobs.close_after_chunks = None
    back = time.monotonic()
    result = join()
    outcomes = result.outcomes()
    unstated = {k: v for k, v in outcomes.items() if k.startswith("exc") or k.endswith((" ?", "early"))}
    assert not unstated, outcomes
    assert_all_answered(d, result)
    answered_again = d.answering_again(result, back)
    rows = d.answer_rows()
    record(
        "model server cuts streams 3 s",
        turns=len(result.turns),
        ok=result.ok,
        errors={k: v for k, v in outcomes.items() if k != "ok"},
        error_rows={k: v for k, v in rows.items() if k != "ok"},
        lost=0,
        p99_after=ms(result.latencies(since=back), 99),
        answering_again_after=f"{answered_again:.1f} s",
        cut_for=f"{back - cut:.1f} s",
    )


def test_web_worker_killed_mid_stream(deployment_factory: Factory) -> None:
    """Inject: SIGKILL of the uvicorn process while streams run, 2 s into an 8 s load; started again.
    Expect: the turns it was running fail on the client; after `mark_interrupted_turns` (here with
    its cutoff passed, as it is 3 minutes later) every stored question has an answer row."""
    d = deployment_factory()
    d.model.knobs.chunk_delay_seconds = 0.1  # each answer streams for about a second
    join = d.load_in_background(8.0)
    time.sleep(2.0)
    process = d.processes.running["web"]
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = time.monotonic()
    d.processes.running.pop("web")
    d.start_web()
    back = time.monotonic()
    result = join()
    left_by_kill = d.settle(timeout=10)
    code = (
        "import datetime, django; django.setup(); from django.utils import timezone; "
        "from django.conf import settings; from agents.interrupted import mark_interrupted_turns, MARGIN_SECONDS; "
        "later = timezone.now() + datetime.timedelta("
        "seconds=settings.TOKENCACHE_MODEL_TOTAL_TIMEOUT + MARGIN_SECONDS + 1); "
        "print(len(mark_interrupted_turns(now=later)))"
    )
    env = {**d.processes.env, "DJANGO_SETTINGS_MODULE": "tokencache_project.settings"}
    marked = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert d.unanswered() == 0, d.answer_rows()
    failed = {k: v for k, v in result.outcomes().items() if k != "ok"}
    assert not five_xx(result), result.outcomes()
    assert any(t.outcome == "ok" and t.started > back for t in result.turns), result.outcomes()
    record(
        "web process killed mid-stream",
        turns=len(result.turns),
        ok=result.ok,
        failed_on_client=failed,
        left_unanswered_by_kill=left_by_kill,
        marked_interrupted=int(marked.stdout.strip().splitlines()[-1]),
        lost_after_marking=0,
        restart_to_serving=f"{back - killed:.1f} s",
    )


def test_database_busy(deployment_factory: Factory) -> None:
    """Inject: another connection holds a write transaction (BEGIN IMMEDIATE) on the database file
    for 4 s, 2 s into an 8 s load. Expect: turns wait for it (busy timeout 20 s), none fails or is lost."""
    d = deployment_factory()
    join = d.load_in_background(8.0)
    time.sleep(2.0)
    connection = sqlite3.connect(d.database, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        held = time.monotonic()
        time.sleep(4.0)
        connection.execute("COMMIT")
        released = time.monotonic()
    finally:
        connection.close()
    result = join()
    assert result.outcomes() == {"ok": len(result.turns)}, result.outcomes()
    assert_all_answered(d, result)
    record(
        "database busy (write lock held 4 s)",
        turns=len(result.turns),
        ok=result.ok,
        five_xx=0,
        lost=0,
        max_during=ms(result.latencies(since=held - 1, until=released), 100),
        p99_after=ms(result.latencies(since=released), 99),
    )


def _warming_run(d: Deployment, run_id: int) -> tuple[str, int, int]:
    rows = d.rows("SELECT status, done_chunks, total_chunks FROM agents_warmingrun WHERE id = ?", run_id)
    return rows[0] if rows else ("missing", 0, 0)


def test_celery_worker_killed_mid_warming(deployment_factory: Factory) -> None:
    """Inject: SIGKILL of the Celery worker (solo pool) while it runs a warming run (slowed: 2 chunks
    per batch, 2 % duty cycle), under the chat load; the worker is started again.
    Expect: chat unaffected; the run is carried out by the restarted worker or marked failed."""
    d = deployment_factory(TOKENCACHE_WARM_BATCH_CHUNKS="2", TOKENCACHE_WARM_DUTY_CYCLE="0.02")
    d.processes.start_worker("worker")
    response = httpx.post(
        f"{d.url}/api/cache/warm", headers={"Authorization": f"Bearer {d.token}"}, json={"agent": "documentation"}
    )
    assert response.status_code == 202, response.text
    run_id = int(response.json()["run"]["id"])
    join = d.load_in_background(8.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _warming_run(d, run_id)[:2] in (("queued", 0), ("running", 0)):
        time.sleep(0.1)
    status, done_at_kill, total = _warming_run(d, run_id)
    assert status == "running", status
    worker = d.processes.running.pop("worker")
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    d.processes.start_worker("worker")
    restarted = time.monotonic()
    result = join()
    assert result.outcomes() == {"ok": len(result.turns)}, result.outcomes()
    assert_all_answered(d, result)
    # The restarted worker queues the orphaned run again at start (agents.warming.requeue_orphaned_runs)
    # and carries it out: about 20 s of slowed warming here; generous for a loaded CI machine.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _warming_run(d, run_id)[0] in ("queued", "running"):
        time.sleep(0.5)
    status, done, total = _warming_run(d, run_id)
    record(
        "celery worker killed mid-warming",
        turns=len(result.turns),
        ok=result.ok,
        run_status_after_restart=status,
        chunks_done_at_kill=f"{done_at_kill} of {total}",
        chunks_done_after=done,
        settled_after=f"{time.monotonic() - restarted:.1f} s",
    )
    assert status in ("done", "failed"), f"the warming run is still {status!r} 90 s after the worker came back"
