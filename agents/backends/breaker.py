"""One circuit breaker per model server, so a dead server costs one fast error, not a timeout per turn.

The breaker itself is the token cache's (`cachecore.breaker.Breaker`): it holds no lock while
a guarded call runs, so concurrent turns to one server stream in parallel, and it admits one
trial call at a time when half-open. This module only keeps one per base URL, with the model
servers' own thresholds and failure test.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from agents.backends.base import BackendUnavailable
from cachecore.breaker import Breaker, BreakerEvent, BreakerOpen, State

logger = logging.getLogger(__name__)


def _is_server_trouble(exc: BaseException) -> bool:
    # Down, timed out, 5xx or a broken stream; a rejected request (4xx) or the caller's own
    # on_delta failing means the server answered, and retrying could not help.
    return isinstance(exc, BackendUnavailable)


def _log_state_change(event: BreakerEvent) -> None:
    if event.new is State.OPEN:
        logger.warning(
            "model server breaker opened after %d consecutive failures",
            event.failures,
            extra={"model_server": event.name, "new_state": event.new.value},
        )
    elif event.old is not None and event.old is not event.new:
        logger.info("model server breaker %s", event.new.value, extra={"model_server": event.name})


_breakers: dict[str, Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(base_url: str) -> Breaker:
    """The process-wide breaker of one model server (by its base URL), created on first use."""
    key = base_url.rstrip("/")
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = Breaker(
                name=key,
                fail_max=settings.TOKENCACHE_MODEL_BREAKER_FAIL_MAX,
                reset_seconds=settings.TOKENCACHE_MODEL_BREAKER_RESET_SECONDS,
                listeners=[_log_state_change],
                counts_as_failure=_is_server_trouble,
            )
        return breaker


@contextmanager
def loop_guard(breaker: Breaker) -> Iterator[None]:
    """`breaker.guard()` for a block that awaits, where many calls share one thread.

    The breaker tells its half-open trial from other calls by thread; on an event loop every call
    is on the loop's thread, and a refused call would end the trial's claim as if it were the trial.
    While a trial is in flight, refuse here, before entering the guard. No await separates this
    check from the guard's own admission, so no other call on the loop can slip in between.
    """
    if breaker._trial_thread is not None:
        raise BreakerOpen(breaker.name, retry_in=0.0)
    with breaker.guard():
        yield
