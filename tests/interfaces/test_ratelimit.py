"""The chat rate limiter counts bursts instead of switching itself off, and lets a turn through when busy."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest
import redis
from django.conf import settings as django_settings

from agents import ratelimit
from agents.errors import RateLimited

USER_ID = 424242  # the limiter counts by id only: no user row needed


def _counted() -> int:
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    return sum(int(client.get(key) or 0) for key in client.scan_iter(f"tc:rl:chat:{USER_ID}:*"))


def test_a_burst_larger_than_the_pool_is_counted_not_waved_through(settings, caplog):
    settings.TOKENCACHE_POOL_SIZE = 2
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1000
    callers = 40
    start = threading.Barrier(callers)
    failures: list[BaseException] = []

    def turn() -> None:
        start.wait()
        try:
            ratelimit.check_chat_rate(USER_ID)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=turn) for _ in range(callers)]
    with caplog.at_level(logging.INFO, logger="agents.ratelimit"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert not failures
    assert not [r for r in caplog.records if r.getMessage() == "chat_rate_limit_unavailable"]
    assert _counted() == callers  # every turn of the burst was counted: the limiter did not fail open


def test_when_every_connection_is_busy_the_turn_passes_and_the_limiter_stays_on(settings, caplog):
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1
    slots = ratelimit._limiter().slots
    for _ in range(settings.TOKENCACHE_POOL_SIZE):
        assert slots.acquire(timeout=1)  # as if every connection were serving another check
    try:
        with caplog.at_level(logging.INFO, logger="agents.ratelimit"):
            started = time.monotonic()
            ratelimit.check_chat_rate(USER_ID)  # allowed, uncounted
            ratelimit.check_chat_rate(USER_ID)
            waited = time.monotonic() - started
    finally:
        for _ in range(settings.TOKENCACHE_POOL_SIZE):
            slots.release()
    assert waited < 2 * ratelimit.POOL_WAIT_SECONDS + 1
    assert [r.getMessage() for r in caplog.records] == ["chat_rate_limit_busy"] * 2
    ratelimit.check_chat_rate(USER_ID)  # counted again at once: no cool-down was started
    with pytest.raises(RateLimited) as limited:
        ratelimit.check_chat_rate(USER_ID)
    assert limited.value.status == 429


def test_while_redis_is_down_each_process_still_limits_turns(settings, redis_factory, caplog, monkeypatch):
    dead = redis_factory()
    dead.stop()
    settings.REDIS_URL = dead.url(0)
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 3
    allowed = refused = 0
    with caplog.at_level(logging.WARNING, logger="agents.ratelimit"):
        started = time.monotonic()
        for _ in range(200):  # the outage's burst: 1,720 turns in 14 s went through a limiter that failed open
            try:
                ratelimit.check_chat_rate(USER_ID)
                allowed += 1
            except RateLimited as limited:
                refused += 1
                assert limited.status == 429 and 1 <= limited.retry_after <= 61
        elapsed = time.monotonic() - started
    assert (allowed, refused) == (3, 197)
    assert elapsed < 5  # one refused connection, then the cool-down skips Redis: no timeout per turn
    assert [r.getMessage() for r in caplog.records] == ["chat_rate_limit_unavailable"]  # logged once
    ratelimit.check_chat_rate(USER_ID + 1)  # another user has a budget of their own

    # The next minute's window starts afresh, Redis or not.
    later = ratelimit.time.time() + ratelimit.WINDOW_SECONDS
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: later))
    ratelimit.check_chat_rate(USER_ID)


def test_when_redis_comes_back_the_shared_count_takes_over_again(settings, redis_factory, monkeypatch):
    server = redis_factory()
    settings.REDIS_URL = server.url(0)
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 2
    server.stop()
    ratelimit.check_chat_rate(USER_ID)  # counted in this process only
    server.start()
    now = ratelimit.time.time()
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: now + ratelimit.COOL_DOWN_SECONDS + 1))
    ratelimit.check_chat_rate(USER_ID)
    ratelimit.check_chat_rate(USER_ID)
    client = redis.Redis.from_url(server.url(0))
    assert sum(int(client.get(key) or 0) for key in client.scan_iter(f"tc:rl:chat:{USER_ID}:*")) == 2
