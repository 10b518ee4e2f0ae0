"""The circuit breaker around every Redis call, behind our own small interface.

pybreaker keeps the state machine (closed -> open after N consecutive failures ->
half-open after the reset timeout -> closed on a successful trial). We wrap it so
that callers see our `State` enum and `BreakerOpen` error, never pybreaker's, and so
that every state change reaches its listeners: `gauge_and_log` here (a gauge value and a
log line) and `cachecore.recorder.DatabaseRecorder` (the process's database row).

One deliberate detail: we enter pybreaker through `calling()`, not `call()`.
`call()` holds the breaker's lock for the whole guarded call, which would let only
one thread of the process talk to Redis at a time, and make every thread queue
behind a stalled 5-second read. `calling()` takes the lock only to check and update
the state; the Redis round trip itself runs unlocked.

Running unlocked means pybreaker alone would let every concurrent call into the
half-open state's "one trial call". We admit exactly one: the others raise
`BreakerOpen` at once, so a still-stalled Redis costs one timeout per reset period,
not one per request that arrives during the trial.

Running unlocked also means pybreaker records a call's failure after the call, on the state
the call started in: eight calls that entered while closed and fail together would each
"open" the breaker again (open -> open), each a warning, a row write and a restart of the
reset period. `_CircuitBreaker.open` lets only real transitions through: closed -> open, and
half-open -> open by the trial itself.
"""

import enum
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
from redis.exceptions import RedisError

from cachecore import metrics
from cachecore.clock import SYSTEM, Clock
from cachecore.exceptions import CacheCoreError
from cachecore.process import ProcessIdentity

logger = logging.getLogger(__name__)


class State(enum.StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half-open"
    OPEN = "open"

    @property
    def gauge_value(self) -> int:
        """0 closed, 1 half-open, 2 open: higher is worse, for alerting."""
        return {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}[self]


class BreakerOpen(CacheCoreError):
    """The breaker is open: the call was skipped without touching the network.

    `retry_in` is how many seconds until a trial call may be admitted (0 while a
    trial call is in flight), for messages such as "not calling it again for 25 s".
    """

    def __init__(self, name: str, *, retry_in: float) -> None:
        super().__init__(f"breaker {name!r} is open")
        self.retry_in = retry_in


@dataclass(frozen=True)
class BreakerEvent:
    """One state change of one breaker."""

    name: str
    old: State | None
    new: State
    failures: int
    at: datetime


BreakerListener = Callable[[BreakerEvent], None]


def is_redis_trouble(exc: BaseException) -> bool:
    """The default failure test: Redis trouble (connection refused, timeouts, OOM,
    loading...) trips the breaker; anything else is a bug in the guarded code and
    must not open it."""
    return isinstance(exc, RedisError)


class _Relay(pybreaker.CircuitBreakerListener):
    """pybreaker's hooks, turned into trial admission and our `BreakerEvent`s."""

    def __init__(self, breaker: "Breaker") -> None:
        self._breaker = breaker

    def before_call(self, cb: pybreaker.CircuitBreaker, func: object, *args: object, **kwargs: object) -> None:
        # pybreaker calls this under its lock, in the state that will run the call, after
        # an open breaker whose reset timeout elapsed has turned half-open: the one place
        # where "is a trial already running?" can be asked and answered without a race.
        # Raising here refuses the call before it runs, and counts nothing.
        if cb.current_state == pybreaker.STATE_HALF_OPEN:
            if self._breaker._trial_thread is not None:
                raise pybreaker.CircuitBreakerError("a trial call is in flight")
            self._breaker._trial_thread = threading.get_ident()

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        if old_state is not None and old_state.name == new_state.name:
            return  # not a transition (see _CircuitBreaker.open)
        if new_state.name == pybreaker.STATE_OPEN:
            self._breaker._opened_at = self._breaker.clock.monotonic()
        event = BreakerEvent(
            name=self._breaker.name,
            old=State(old_state.name) if old_state is not None else None,
            new=State(new_state.name),
            failures=cb.fail_counter,
            at=datetime.now(UTC),
        )
        for listener in self._breaker.listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must never break a Redis call
                logger.exception("breaker listener %r failed", listener)


class _CircuitBreaker(pybreaker.CircuitBreaker):
    """pybreaker's breaker, opening only on a real transition (see the module docstring)."""

    def __init__(self, breaker: "Breaker", **options: Any) -> None:
        super().__init__(**options)
        self._owner = breaker

    def open(self) -> bool:
        with self._lock:
            state = self.current_state
            trial_failed = state == pybreaker.STATE_HALF_OPEN and self._owner._trial_thread == threading.get_ident()
            if state == pybreaker.STATE_CLOSED or trial_failed:
                return super().open()
            # A call that started before the breaker opened (or another thread's, during the
            # trial) failing late: the state it would report is already known.
            return self._throw_new_error_on_trip


class _ClockedStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's in-memory state, with the time of opening read from our clock.

    pybreaker half-opens when `datetime.now() >= opened_at + reset_timeout`. Reporting
    `opened_at` as now minus the seconds elapsed on our clock since opening turns that into
    "elapsed >= reset_timeout" on our clock, so a test that moves its clock moves the reset.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock
        self._opened_on_clock: float | None = None

    @property
    def opened_at(self) -> datetime | None:
        if self._opened_on_clock is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=self._clock.monotonic() - self._opened_on_clock)

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        # pybreaker passes its datetime.now(); the moment that counts is our clock's.
        self._opened_on_clock = self._clock.monotonic()


class Breaker:
    """Closed, open, half-open, per process. Thread-safe.

    The whole interface, for the token store and for any other guarded service:

    - `with breaker.guard(): ...` runs the block as one guarded call. Closed: every
      thread runs its block at once, nothing held while it runs. Open: `BreakerOpen`
      at once, the block never runs. Half-open (the reset timeout has elapsed): one
      call, the trial, runs its block; every other call gets `BreakerOpen` (with
      `retry_in == 0`) until the trial ends. The trial's success closes the breaker,
      its failure opens it for another reset period.
    - `counts_as_failure(exc)` decides which errors escaping the block are failures
      (default: `RedisError`). Any other error propagates and counts as a success,
      since the service answered: a bug or a rejected request must not open it.
    - `listeners` receive a `BreakerEvent` on every state change (gauge, log, row).
    - `state`, `failures` (consecutive), `fail_max`, `reset_seconds`; `reset()`;
      `allow_trial()` (the service answers again: half-open now).
    - `clock` measures the reset timeout (`cachecore.clock`): tests move it instead of sleeping.

    Everything that can fail must happen inside the block: a response read to the
    end (a stream included) inside it is what lets a broken stream count. There is
    no separate "record a failure later" call, because a failure reported after the
    block could not be tied to the trial it ends.
    The block must be bounded by timeouts: a trial that never ends keeps the
    breaker half-open and every other call bypassing.
    """

    def __init__(
        self,
        *,
        name: str,
        fail_max: int = 5,
        reset_seconds: float = 60.0,
        listeners: list[BreakerListener] | None = None,
        counts_as_failure: Callable[[BaseException], bool] = is_redis_trouble,
        clock: Clock = SYSTEM,
    ) -> None:
        self.name = name
        self.clock = clock
        self.listeners = list(listeners or [])
        # The thread running the half-open trial call, if any (set and checked by
        # _Relay.before_call under pybreaker's lock; cleared when its block ends).
        self._trial_thread: int | None = None
        self._opened_at = 0.0  # clock.monotonic() of the last change to open
        self._cb = _CircuitBreaker(
            self,
            fail_max=fail_max,
            reset_timeout=reset_seconds,
            exclude=[lambda exc: not counts_as_failure(exc)],
            listeners=[_Relay(self)],
            name=name,
            throw_new_error_on_trip=False,  # callers see the Redis error that tripped it
            state_storage=_ClockedStorage(clock),
        )

    @property
    def state(self) -> State:
        return State(self._cb.current_state)

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far (reset by any success)."""
        return self._cb.fail_counter

    @property
    def fail_max(self) -> int:
        return self._cb.fail_max

    @property
    def reset_seconds(self) -> float:
        return self._cb.reset_timeout

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block as one guarded call.

        Raises `BreakerOpen` at once, before the block runs, while the breaker is
        open or another call is its half-open trial; an error raised by the block
        propagates, and counts as a failure if `counts_as_failure` says so (by
        default: a `RedisError`).
        """
        # With throw_new_error_on_trip=False pybreaker raises its error only on entry.
        try:
            with self._cb.calling():
                yield
        except pybreaker.CircuitBreakerError as exc:
            raise BreakerOpen(self.name, retry_in=self._retry_in()) from exc
        finally:
            # The trial's outcome is recorded (closed or open again) before we get
            # here, so the next call sees the new state, never a second trial.
            if self._trial_thread == threading.get_ident():
                self._trial_thread = None

    def _retry_in(self) -> float:
        if self._trial_thread is not None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_seconds - self.clock.monotonic())

    def allow_trial(self) -> bool:
        """Let the next call be the half-open trial now, before the reset timeout ends.

        For a caller that saw the service answer again (`cachecore.probe`): the breaker
        turns half-open at once (an open -> half-open event), so recovery does not wait out
        the reset period. False, changing nothing, unless the breaker is open.
        """
        with self._cb._lock:
            if self._cb.current_state != pybreaker.STATE_OPEN:
                return False
            self._cb.half_open()
            return True

    def reset(self) -> None:
        """Force the breaker closed (tests, or an operator who fixed Redis)."""
        self._cb.close()


def gauge_and_log(identity: ProcessIdentity) -> BreakerListener:
    """Listener: the breaker state gauge for this process, and one log line."""

    def listener(event: BreakerEvent) -> None:
        metrics.BREAKER_STATE.labels(process=identity.label).set(event.new.gauge_value)
        log = logger.warning if event.new is not State.CLOSED else logger.info
        log(
            "token cache breaker %s: %s -> %s after %d consecutive failures",
            event.name,
            event.old.value if event.old else "-",
            event.new.value,
            event.failures,
            extra={
                "event": "breaker_state_change",
                "breaker": event.name,
                "breaker_process": identity.label,
                "old_state": event.old.value if event.old else None,
                "new_state": event.new.value,
                "failures": event.failures,
            },
        )

    return listener
