"""One chat turn in a worker thread, its deltas handed over as events, for streaming interfaces.

The SSE view and the websocket consumer must stream while `run_turn` (synchronous,
database-bound) runs. The turn runs in a bounded pool of worker threads and always runs
to the end, whoever listens: a client that goes away mid-answer cancels only the
forwarding, never the turn, so the answer is stored (design invariant 6).
"""

from __future__ import annotations

import asyncio
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections

from agents.chat import TurnResult, run_turn

# Bounded, so a flood of streaming requests queues instead of opening a database connection each.
_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="chat-turn")


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Done:
    result: TurnResult


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Delta | Done | Failed


class TurnStream:
    """`TurnStream(user=..., agent=..., message=..., ...).start()`; then `next_event()` until Done or Failed."""

    def __init__(self, **turn_kwargs: Any) -> None:
        self._kwargs = turn_kwargs
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def start(self) -> TurnStream:
        _pool.submit(self._run)
        return self

    def _run(self) -> None:
        # A pool thread is a long-lived thread: treat each turn like a request for connection handling.
        close_old_connections()
        try:
            result = run_turn(**self._kwargs, on_delta=lambda text: self._events.put(Delta(text)))
        except BaseException as error:
            self._events.put(Failed(error))
        else:
            self._events.put(Done(result))
        finally:
            close_old_connections()

    def next_event(self, timeout: float | None = None) -> Event:
        """Block for the next event; raises `queue.Empty` after `timeout` seconds."""
        return self._events.get(timeout=timeout)

    async def anext_event(self) -> Event:
        return await asyncio.to_thread(self._events.get)
