"""Degrade, never fail: Redis killed or stalled opens the breaker; recovery closes it."""

import logging
import threading
import time

import pytest

from cachecore.breaker import Breaker, BreakerOpen, DatabaseRecorder, ProcessIdentity, State, gauge_and_log
from cachecore.models import BreakerProcess
from cachecore.store import Outcome
from tests.cachecore.conftest import TEST_RESET_SECONDS, CountingTokenizer, StoreFactory

TTL = 300


def test_redis_killed_opens_the_breaker_after_five_failures_and_recovery_closes_it(
    store_on: StoreFactory, redis_factory, counting: CountingTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), connect_timeout=0.5, read_timeout=0.5)
    store.get_many(counting, ["warm text"], ttl=TTL)
    redis.stop()

    with caplog.at_level(logging.WARNING, logger="cachecore"):
        for _ in range(5):
            batch = store.get_many(counting, ["warm text"], ttl=TTL)
            assert batch.items[0].outcome is Outcome.BYPASS
            assert counting.decode(batch.items[0].ids) == "warm text"
    assert store.breaker.state is State.OPEN
    failure = next(r for r in caplog.records if getattr(r, "event", "") == "redis_error")
    assert failure.operation == "lookup" and failure.error == "ConnectionError"

    started = time.perf_counter()
    batch = store.get_many(counting, ["warm text"], ttl=TTL)
    assert time.perf_counter() - started < 0.001
    assert batch.round_trips == 0 and batch.bypassed == 1

    redis.start()
    time.sleep(TEST_RESET_SECONDS + 0.05)
    batch = store.get_many(counting, ["warm text"], ttl=TTL)  # the half-open trial succeeds
    assert store.breaker.state is State.CLOSED
    assert batch.misses == 1  # the restarted Redis is empty
    assert store.get_many(counting, ["warm text"], ttl=TTL).hits == 1


def test_a_failed_trial_call_reopens_the_breaker(store_on: StoreFactory, redis_factory, counting) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), fail_max=2, connect_timeout=0.5)
    redis.stop()
    for _ in range(2):
        store.get_many(counting, ["x"], ttl=TTL)
    assert store.breaker.state is State.OPEN
    time.sleep(TEST_RESET_SECONDS + 0.05)
    assert store.get_many(counting, ["x"], ttl=TTL).bypassed == 1
    assert store.breaker.state is State.OPEN


def test_stalled_redis_timeouts_count_as_failures_and_open_the_breaker(
    store_on: StoreFactory, redis_factory, counting
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), read_timeout=0.1)
    store.get_many(counting, ["stalled"], ttl=TTL)  # connect before the pause
    redis.pause(3000)
    started = time.monotonic()
    for _ in range(5):
        assert store.get_many(counting, ["stalled"], ttl=TTL).bypassed == 1
    assert store.breaker.state is State.OPEN
    assert time.monotonic() - started < 2.0


def test_threads_are_not_serialized_behind_a_slow_redis_call(store_on: StoreFactory, redis_factory, counting) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), read_timeout=0.4, fail_max=50)
    store.get_many(counting, ["warm"], ttl=TTL)
    redis.pause(2000)
    threads = [
        threading.Thread(target=store.get_many, args=(counting, ["warm"]), kwargs={"ttl": TTL}) for _ in range(4)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 1.2  # four 0.4 s timeouts in parallel, not 1.6 s in a row


def test_errors_other_than_redis_errors_never_trip_the_breaker() -> None:
    breaker = Breaker(name="unit", fail_max=1)
    with pytest.raises(ValueError), breaker.guard():
        raise ValueError("a bug, not an outage")
    assert breaker.state is State.CLOSED


def test_an_open_breaker_refuses_without_running_the_block() -> None:
    from redis.exceptions import ConnectionError

    breaker = Breaker(name="unit", fail_max=1, reset_seconds=60)
    with pytest.raises(ConnectionError), breaker.guard():
        raise ConnectionError("down")
    ran = False
    with pytest.raises(BreakerOpen), breaker.guard():
        ran = True
    assert not ran


@pytest.mark.django_db(transaction=True)
def test_every_state_change_sets_the_gauge_and_the_process_row() -> None:
    from prometheus_client import REGISTRY
    from redis.exceptions import TimeoutError

    identity = ProcessIdentity(host="worker-host", pid=4242, role="worker")
    recorder = DatabaseRecorder(identity)
    breaker = Breaker(name="unit", fail_max=2, reset_seconds=0.05, listeners=[gauge_and_log(identity), recorder])
    recorder.register(breaker)
    for _ in range(2):
        with pytest.raises(TimeoutError), breaker.guard():
            raise TimeoutError("stalled")
    recorder.flush()
    row = BreakerProcess.objects.get(host="worker-host", pid=4242)
    assert (row.role, row.state, row.consecutive_failures) == ("worker", "open", 2)
    gauge = REGISTRY.get_sample_value("tokencache_breaker_state", {"process": identity.label})
    assert gauge == 2

    time.sleep(0.06)
    with breaker.guard():
        pass
    recorder.flush()
    assert BreakerProcess.objects.get(host="worker-host", pid=4242).state == "closed"
    assert REGISTRY.get_sample_value("tokencache_breaker_state", {"process": identity.label}) == 0
