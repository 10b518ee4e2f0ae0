"""The chat rate limiter counts bursts instead of switching itself off, and lets a turn through when busy."""

from __future__ import annotations

import logging
import threading
import time

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
