"""Background work on a real Celery worker (threads pool, in this process, on the real Redis broker).

Edits warm the cache and free the entries they orphan; staff warm and invalidate on request;
an empty cache after a Redis restart is re-warmed. The worker runs in this process so that it
shares the test database (SQLite in memory): tests here are transactional.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth.models import User
from django.db import OperationalError
from django.test import Client

from agents.chat import run_turn
from agents.models import Agent, Chunk, KnowledgeDocument, WarmingRun
from agents.tasks import check_cold_start
from cachecore.keys import token_key
from cachecore.store import default_store
from cachecore.tokenizers import get_tokenizer
from tests.conftest import Demo
from tests.redis_process import RedisProcess
from tokencache_project.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(demo: Demo) -> Iterator[None]:
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=10):
        yield


def cached(chunks: list[Chunk] | Any, redis_server: RedisProcess) -> list[bool]:
    fingerprints: dict[str, str] = {}
    keys = []
    for chunk in chunks:
        spec = chunk.document.agent.tokenizer_spec
        fingerprint = fingerprints.setdefault(spec, get_tokenizer(spec).fingerprint)
        keys.append(token_key(fingerprint, chunk.content_hash))
    client = redis_server.client()
    return [bool(client.exists(key)) for key in keys]


def eventually(check: Callable[[], bool], *, seconds: float = 30) -> None:
    """Wait for `check`; the worker's threads write to the same in-memory SQLite, which may be locked a moment."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except OperationalError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("not within the time allowed")
        time.sleep(0.2)


def staff_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_admin_edit_warms_the_new_text_and_frees_the_old_within_seconds(
    demo: Demo, root: User, worker: None, redis_server: RedisProcess
) -> None:
    document = demo.agents["support"].documents.get(source="support/redis-down")
    run_turn(user=root, agent=demo.agents["support"], message="What do I do when Redis is down?")
    old = list(document.chunks.select_related("document__agent"))
    eventually(lambda: any(cached(old, redis_server)))  # the turn cached some of them

    response = staff_client(root).post(
        f"/admin/agents/knowledgedocument/{document.pk}/change/",
        {
            "agent": document.agent_id,
            "title": document.title,
            "source": document.source,
            "body": "# Redis down\n\nPhone the wombat hotline, then check /readyz.",
            "chunks-TOTAL_FORMS": 0,
            "chunks-INITIAL_FORMS": 0,
            "chunks-MIN_NUM_FORMS": 0,
            "chunks-MAX_NUM_FORMS": 1000,
        },
    )

    assert response.status_code == 302
    new = list(document.chunks.select_related("document__agent"))
    eventually(lambda: all(cached(new, redis_server)) and not any(cached(old, redis_server)))


def test_staff_warm_an_agent_through_the_api_and_watch_the_run_finish(
    demo: Demo, root: User, alice: User, worker: None, redis_server: RedisProcess
) -> None:
    support = demo.agents["support"]
    body = orjson.dumps({"agent": "support"})
    assert staff_client(alice).post("/api/cache/warm", body, content_type="application/json").status_code == 403

    queued = staff_client(root).post("/api/cache/warm", body, content_type="application/json")

    assert queued.status_code == 202
    run_id = queued.json()["run"]["id"]
    eventually(lambda: WarmingRun.objects.get(pk=run_id).status == WarmingRun.Status.DONE)
    run = staff_client(root).get(f"/api/cache/warm/{run_id}").json()["run"]
    chunks = list(Chunk.objects.filter(document__agent=support).select_related("document__agent"))
    assert run["done_chunks"] == run["total_chunks"] == len(chunks)
    assert run["already_cached"] <= len(chunks)  # the demo's own edits may have warmed some already
    assert all(cached(chunks, redis_server))


def test_invalidation_through_the_api_says_how_many_keys_went(
    demo: Demo, root: User, redis_server: RedisProcess
) -> None:
    from django.core.management import call_command

    call_command("warm_cache", "--agent", "support", stdout=None)
    support_chunks = list(Chunk.objects.filter(document__agent__slug="support").select_related("document__agent"))
    distinct = len({chunk.content_hash for chunk in support_chunks})
    client = staff_client(root)

    response = client.post("/api/cache/invalidate", orjson.dumps({"agent": "support"}), content_type="application/json")

    assert response.json() == {"deleted": distinct, "agent": "support"}
    assert not any(cached(support_chunks, redis_server))
    both = client.post(
        "/api/cache/invalidate", orjson.dumps({"agent": "support", "tokenizer": "x"}), content_type="application/json"
    )
    assert both.status_code == 400


def test_a_redis_restart_is_noticed_and_the_cache_rewarmed_hottest_first(
    demo: Demo, root: User, redis_server: RedisProcess
) -> None:
    run_turn(user=root, agent=demo.agents["support"], message="What do I do when Redis is down?")
    assert check_cold_start.apply().result is True  # the first check after start-up finds the cache new
    assert check_cold_start.apply().result is False  # and the next one does not
    WarmingRun.objects.all().delete()  # that run's message goes down with Redis below

    redis_server.stop()
    redis_server.start()  # empty: deploy/redis.conf keeps no snapshot
    default_store().breaker.reset()
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, shutdown_timeout=10):
        check_cold_start.delay()  # as beat sends it every minute
        eventually(
            lambda: WarmingRun.objects.filter(
                reason=WarmingRun.Reason.COLD_START, status=WarmingRun.Status.DONE
            ).exists()
        )

    chunks = list(Chunk.objects.filter(document__agent__enabled=True).select_related("document__agent"))
    assert all(cached(chunks, redis_server))


def test_one_warming_run_per_agent_at_a_time(demo: Demo) -> None:
    from django.core.cache import cache

    from agents.warming import run_warming

    cache.add(f"tc:v1:warming:{demo.agents['support'].pk}", "another run", timeout=60)
    run = WarmingRun.objects.create(agent=demo.agents["support"], reason=WarmingRun.Reason.ADMIN)

    assert run_warming(run=run).status == WarmingRun.Status.SKIPPED


def test_an_edit_is_kept_when_the_broker_is_unreachable(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import tasks
    from agents.knowledge import save_document

    def broker_down(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("the broker is down")

    monkeypatch.setattr(tasks.refresh_document, "apply_async", broker_down)
    document = KnowledgeDocument(agent=demo.agents["support"], source="support/new", title="New", body="Fresh text.")

    save_document(document=document)

    assert KnowledgeDocument.objects.filter(source="support/new", body="Fresh text.").exists()


def test_warming_sleeps_so_that_it_works_at_most_its_duty_cycle(demo: Demo) -> None:
    from agents.warming import Budget, warm_chunks

    chunks = list(
        Chunk.objects.filter(document__agent=demo.agents["business"]).select_related("document__agent__ttl_policy")
    )
    slept: list[float] = []

    tally = warm_chunks(chunks, budget=Budget(batch_chunks=8, duty_cycle=0.25), sleep=slept.append)

    assert tally.done_chunks == len(chunks)
    assert len(slept) == -(-len(chunks) // 8)
    assert sum(slept) == pytest.approx(3 * tally.seconds, rel=0.01)


def test_a_disabled_agent_is_not_warmed(demo: Demo) -> None:
    from agents.warming import hottest_chunks

    Agent.objects.filter(slug="business").update(enabled=False)

    assert {chunk.document.agent.slug for chunk in hottest_chunks()} == {"support", "documentation"}


def test_a_run_left_running_by_a_dead_worker_is_queued_again_and_finished(
    demo: Demo, redis_server: RedisProcess
) -> None:
    import socket
    import subprocess
    import sys

    from django.core.cache import cache

    from agents.warming import requeue_orphaned_runs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs, as a worker killed mid-run leaves
    support = demo.agents["support"]
    orphan = WarmingRun.objects.create(
        agent=support, reason=WarmingRun.Reason.ADMIN, status=WarmingRun.Status.RUNNING,
        worker_host=socket.gethostname(), worker_pid=dead.pid, done_chunks=3, total_chunks=80,
    )  # fmt: skip
    cache.set(f"tc:v1:warming:{support.pk}", orphan.pk, timeout=900)  # its lock outlived it
    alive = WarmingRun.objects.create(
        agent=demo.agents["business"], reason=WarmingRun.Reason.ADMIN, status=WarmingRun.Status.RUNNING,
        worker_host=socket.gethostname(), worker_pid=os.getpid(),
    )  # fmt: skip

    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, shutdown_timeout=10):
        assert [run.pk for run in requeue_orphaned_runs()] == [orphan.pk]
        eventually(lambda: WarmingRun.objects.get(pk=orphan.pk).status == WarmingRun.Status.DONE)

    orphan.refresh_from_db()
    assert "its worker stopped after 3 of 80 chunks" in orphan.error
    assert orphan.done_chunks == orphan.total_chunks
    assert WarmingRun.objects.get(pk=alive.pk).status == WarmingRun.Status.RUNNING
    assert requeue_orphaned_runs() == []
