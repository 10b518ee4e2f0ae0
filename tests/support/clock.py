"""A clock that tests move by hand: sleeping on it advances it at once."""

from __future__ import annotations

import threading


class FakeClock:
    """A `cachecore.clock.Clock` whose time passes only when told (`advance`) or slept on."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
