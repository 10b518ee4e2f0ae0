"""One circuit breaker per model server, so a dead server costs one fast error, not a timeout per turn.

pybreaker keeps the state and counters, but `CircuitBreaker.call` holds one lock for the whole
guarded call: a streamed answer lasts seconds, so wrapping it would serialize every chat turn
to that server. Here the breaker only admits a call (before) and records its outcome (after);
the network call itself runs outside pybreaker's lock.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from typing import Any, NoReturn

import pybreaker
from django.conf import settings

logger = logging.getLogger(__name__)


class State(enum.Enum):
    CLOSED = pybreaker.STATE_CLOSED
    OPEN = pybreaker.STATE_OPEN
    HALF_OPEN = pybreaker.STATE_HALF_OPEN


class BreakerOpen(Exception):
    def __init__(self, retry_in: float) -> None:
        super().__init__(f"circuit open, retry in {retry_in:.0f} s")
        self.retry_in = retry_in


class ModelServerBreaker:
    def __init__(self, name: str, *, fail_max: int, reset_seconds: float) -> None:
        self.name = name
        self.reset_seconds = reset_seconds
        self._lock = threading.Lock()
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_seconds, name=name, listeners=[_StateLog(self)]
        )

    @property
    def state(self) -> State:
        return State(self._breaker.current_state)

    def admit(self) -> None:
        """Let a call through, or raise `BreakerOpen` at once without touching the network."""
        with self._lock:
            state = self.state
            if state is State.OPEN:
                retry_in = self._opened_at + self.reset_seconds - time.monotonic()
                if retry_in > 0:
                    raise BreakerOpen(retry_in)
                self._breaker.half_open()
                self._trial_in_flight = True
            elif state is State.HALF_OPEN:
                # One trial call at a time; the others keep failing fast until it reports.
                if self._trial_in_flight:
                    raise BreakerOpen(0.0)
                self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            self._trial_in_flight = False
            # CircuitBreakerError: opened by other calls meanwhile; its reset timeout decides.
            with contextlib.suppress(pybreaker.CircuitBreakerError):
                self._breaker.call(_succeed)

    def record_failure(self, error: Exception) -> None:
        with self._lock:
            self._trial_in_flight = False
            # Counted; pybreaker re-raises what it recorded (or CircuitBreakerError when it trips).
            with contextlib.suppress(pybreaker.CircuitBreakerError, type(error)):
                self._breaker.call(_fail, error)

    def _opened(self) -> None:
        self._opened_at = time.monotonic()


class _StateLog(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: ModelServerBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if new_state.name == pybreaker.STATE_OPEN:
            self.owner._opened()
            logger.warning(
                "model server breaker opened",
                extra={"model_server": self.owner.name, "reset_seconds": self.owner.reset_seconds},
            )
        elif old_state is not None and old_state.name != new_state.name:
            logger.info("model server breaker %s", new_state.name, extra={"model_server": self.owner.name})


def _succeed() -> None:
    return None


def _fail(error: Exception) -> NoReturn:
    raise error


_breakers: dict[str, ModelServerBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(base_url: str) -> ModelServerBreaker:
    """The process-wide breaker of one model server (by its base URL), created on first use."""
    key = base_url.rstrip("/")
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = ModelServerBreaker(
                key,
                fail_max=settings.TOKENCACHE_MODEL_BREAKER_FAIL_MAX,
                reset_seconds=settings.TOKENCACHE_MODEL_BREAKER_RESET_SECONDS,
            )
        return breaker
