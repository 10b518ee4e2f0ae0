"""Degrade, never fail: Redis killed or stalled opens the breaker; recovery closes it."""

import logging
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.exceptions import ConnectionError

from cachecore.breaker import Breaker, BreakerOpen, State
from cachecore.store import Outcome
from tests.cachecore.conftest import TEST_RESET_SECONDS, CountingTokenizer, StoreFactory
from tests.support.clock import FakeClock

TTL = 300


def test_redis_killed_opens_the_breaker_after_five_failures_and_recovery_closes_it(
    store_on: StoreFactory,
    redis_factory,
    counting: CountingTokenizer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), connect_timeout=0.5, read_timeout=0.5, clock=clock)
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

    # Bypass in under a millisecond: the median of many calls, so that one scheduler slice
    # on a loaded machine cannot fail it; every call must skip Redis entirely.
    durations = []
    for _ in range(50):
        started = time.perf_counter()
        batch = store.get_many(counting, ["warm text"], ttl=TTL)
        durations.append(time.perf_counter() - started)
        assert batch.round_trips == 0 and batch.bypassed == 1
    assert statistics.median(durations) < 0.001

    redis.start()
    clock.advance(TEST_RESET_SECONDS)
    batch = store.get_many(counting, ["warm text"], ttl=TTL)  # the half-open trial succeeds
    assert store.breaker.state is State.CLOSED
    assert batch.misses == 1  # the restarted Redis is empty
    assert store.get_many(counting, ["warm text"], ttl=TTL).hits == 1


def test_a_failed_trial_call_reopens_the_breaker(
    store_on: StoreFactory, redis_factory, counting, clock: FakeClock
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), fail_max=2, connect_timeout=0.5, clock=clock)
    redis.stop()
    for _ in range(2):
        store.get_many(counting, ["x"], ttl=TTL)
    assert store.breaker.state is State.OPEN
    clock.advance(TEST_RESET_SECONDS)
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
    breaker = Breaker(name="unit", fail_max=1, reset_seconds=60)
    with pytest.raises(ConnectionError), breaker.guard():
        raise ConnectionError("down")
    ran = False
    with pytest.raises(BreakerOpen), breaker.guard():
        ran = True
    assert not ran


def test_an_open_breaker_lets_a_trial_through_only_once_the_reset_timeout_has_passed_on_its_clock(
    clock: FakeClock,
) -> None:
    breaker = Breaker(name="unit", fail_max=1, reset_seconds=60, clock=clock)
    with pytest.raises(ConnectionError), breaker.guard():
        raise ConnectionError("down")
    clock.advance(59.5)
    with pytest.raises(BreakerOpen) as refused, breaker.guard():
        pass
    assert refused.value.retry_in == pytest.approx(0.5)
    assert breaker.state is State.OPEN
    clock.advance(0.5)
    with breaker.guard():
        pass  # the trial
    assert breaker.state is State.CLOSED


def test_half_open_admits_one_trial_call_and_every_other_call_bypasses_at_once() -> None:
    breaker = Breaker(name="unit", fail_max=1, reset_seconds=0.0)  # the next call after opening is the trial
    with pytest.raises(ConnectionError), breaker.guard():
        raise ConnectionError("down")
    trial_running, end_trial = threading.Event(), threading.Event()

    def trial() -> None:
        with breaker.guard():
            trial_running.set()
            end_trial.wait(timeout=5)

    def another_call() -> str:
        try:
            with breaker.guard():
                return "ran"
        except BreakerOpen as refused:
            return f"bypassed, retry in {refused.retry_in:g} s"

    with ThreadPoolExecutor(max_workers=11) as pool:
        trial_done = pool.submit(trial)
        assert trial_running.wait(timeout=5)
        assert breaker.state is State.HALF_OPEN
        others = [pool.submit(another_call) for _ in range(10)]
        assert [other.result(timeout=1) for other in others] == ["bypassed, retry in 0 s"] * 10
        end_trial.set()
        trial_done.result(timeout=5)
    assert breaker.state is State.CLOSED
    assert another_call() == "ran"


def test_a_stalled_redis_costs_one_timeout_per_reset_period_not_one_per_waiting_request(
    store_on: StoreFactory, redis_factory, counting, caplog: pytest.LogCaptureFixture
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), read_timeout=1.0, fail_max=1, reset_seconds=0.0)
    store.get_many(counting, ["stalled"], ttl=TTL)  # connect before the pause
    redis.pause(10_000)
    assert store.get_many(counting, ["stalled"], ttl=TTL).bypassed == 1
    assert store.breaker.state is State.OPEN  # and the reset period is over: the next call is a trial

    everyone_ready = threading.Barrier(8)

    def lookup() -> float:
        everyone_ready.wait(timeout=5)
        started = time.monotonic()
        assert store.get_many(counting, ["stalled"], ttl=TTL).bypassed == 1
        return time.monotonic() - started

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cachecore"), ThreadPoolExecutor(max_workers=8) as pool:
        durations = sorted(pool.map(lambda _: lookup(), range(8)))
    redis_errors = [r for r in caplog.records if getattr(r, "event", "") == "redis_error"]
    assert len(redis_errors) == 1, "only the trial call may wait on the stalled Redis"
    assert durations[-1] >= 0.9  # the trial waited out the read timeout
    assert durations[-2] < 0.5  # everyone else bypassed without waiting


def _fail_together(breaker: Breaker, calls: int) -> None:
    """`calls` guarded calls that all enter while the breaker is closed, then all fail."""
    entered = threading.Barrier(calls)

    def call() -> None:
        with pytest.raises(ConnectionError), breaker.guard():
            entered.wait(timeout=5)
            raise ConnectionError("down")

    with ThreadPoolExecutor(max_workers=calls) as pool:
        for done in [pool.submit(call) for _ in range(calls)]:
            done.result(timeout=5)


def test_concurrent_failures_open_the_breaker_once(caplog: pytest.LogCaptureFixture) -> None:
    events: list[tuple[State | None, State]] = []
    breaker = Breaker(name="unit", fail_max=3, listeners=[lambda event: events.append((event.old, event.new))])
    _fail_together(breaker, 8)
    assert breaker.state is State.OPEN
    assert events == [(State.CLOSED, State.OPEN)]  # before the fix: one closed -> open, five open -> open


def test_a_late_failure_of_a_call_that_started_before_opening_does_not_extend_the_open_period(
    clock: FakeClock,
) -> None:
    breaker = Breaker(name="unit", fail_max=1, reset_seconds=60, clock=clock)
    late_entered, fail_late = threading.Event(), threading.Event()

    def slow_call() -> None:
        with pytest.raises(ConnectionError), breaker.guard():
            late_entered.set()
            fail_late.wait(timeout=5)
            raise ConnectionError("timed out, at last")

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(slow_call)
        assert late_entered.wait(timeout=5)
        with pytest.raises(ConnectionError), breaker.guard():
            raise ConnectionError("down")  # opens the breaker at clock 1000
        clock.advance(30)
        fail_late.set()
        slow.result(timeout=5)
    clock.advance(30)
    with breaker.guard():
        pass  # the trial, 60 s after the breaker opened
    assert breaker.state is State.CLOSED
