"""After a Redis outage, hits resume as soon as Redis answers a PING, not after the breaker's reset."""

import pytest
from redis.exceptions import ConnectionError

from cachecore.breaker import State
from cachecore.probe import RecoveryProbe
from tests.cachecore.conftest import TEST_RESET_SECONDS, CountingTokenizer, StoreFactory
from tests.support.clock import FakeClock

TTL = 300


def _pings(redis) -> int:  # type: ignore[no-untyped-def]
    return int(redis.client().info("commandstats").get("cmdstat_ping", {}).get("calls", 0))


def test_hits_resume_as_soon_as_redis_answers_again_not_after_the_reset_period(
    store_on: StoreFactory, redis_factory, counting: CountingTokenizer, clock: FakeClock
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), fail_max=1, connect_timeout=0.5, read_timeout=0.5, clock=clock)
    probe = RecoveryProbe(breaker=store.breaker, client=store.client)
    store.get_many(counting, ["warm text"], ttl=TTL)
    redis.stop()
    assert store.get_many(counting, ["warm text"], ttl=TTL).bypassed == 1
    assert store.breaker.state is State.OPEN
    assert not probe.check()  # still dead: one failed PING, the breaker stays open
    assert store.get_many(counting, ["warm text"], ttl=TTL).round_trips == 0

    redis.start()
    clock.advance(2)  # a probe interval, far short of the 60 s reset
    assert probe.check()
    batch = store.get_many(counting, ["warm text"], ttl=TTL)  # the trial, admitted now
    assert store.breaker.state is State.CLOSED
    assert batch.misses == 1  # the restarted Redis is empty
    assert store.get_many(counting, ["warm text"], ttl=TTL).hits == 1


def test_the_probe_admits_one_trial_and_a_failed_trial_opens_the_breaker_again(
    store_on: StoreFactory, redis_factory, counting: CountingTokenizer, clock: FakeClock
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), fail_max=1, connect_timeout=0.5, read_timeout=0.2, clock=clock)
    probe = RecoveryProbe(breaker=store.breaker, client=store.client)
    store.get_many(counting, ["x"], ttl=TTL)
    redis.pause(60_000)  # stalled: even a PING times out
    store.get_many(counting, ["x"], ttl=TTL)
    assert store.breaker.state is State.OPEN
    assert not probe.check()
    assert store.breaker.state is State.OPEN
    # The reset timeout stays the upper bound: without any probe success, the trial comes at 60 s.
    clock.advance(TEST_RESET_SECONDS)
    assert store.get_many(counting, ["x"], ttl=TTL).bypassed == 1  # the trial, failed
    assert store.breaker.state is State.OPEN


def test_the_probe_sends_nothing_while_the_breaker_is_closed_and_one_ping_per_check_while_open(
    store_on: StoreFactory, redis_factory, counting: CountingTokenizer, clock: FakeClock
) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), fail_max=1, clock=clock)
    probe = RecoveryProbe(breaker=store.breaker, client=store.client)
    store.get_many(counting, ["x"], ttl=TTL)
    before = _pings(redis)
    for _ in range(5):
        assert not probe.check()
    assert _pings(redis) == before  # a healthy Redis costs nothing

    with pytest.raises(ConnectionError), store.breaker.guard():
        raise ConnectionError("down")  # opens it (fail_max=1) while Redis still answers
    assert store.breaker.state is State.OPEN
    assert probe.check()  # Redis answers: one PING
    assert _pings(redis) == before + 1
    assert store.breaker.state is State.HALF_OPEN


def test_the_probe_thread_checks_every_interval_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from cachecore.breaker import Breaker

    probe = RecoveryProbe(breaker=Breaker(name="unit"), client=None, interval=0.01)
    checks = threading.Semaphore(0)
    monkeypatch.setattr(probe, "check", lambda: bool(checks.release()))
    probe.start()
    assert checks.acquire(timeout=5) and checks.acquire(timeout=5)
    probe.stop()
    assert probe._thread is not None and not probe._thread.is_alive()
