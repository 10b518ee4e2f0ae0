"""Time as a parameter: what waits, expires or resets reads a `Clock`, so tests move time.

The breaker's reset timeout, the store's wait on another process's claim and the
tokenizer registry's memory of failed loads all take one; production uses `SYSTEM`.
"""

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic` and `time.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM: Clock = SystemClock()
