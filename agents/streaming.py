"""One chat turn run apart from its listener, its deltas handed over as events, for streaming interfaces.

The SSE view and the websocket consumer must stream while the turn runs. A turn whose backend
waits on a model server runs as `arun_turn` on the process's turn loop (`agents.turn_loop`): its
database work takes a pool thread for milliseconds, its generation no thread at all, so hundreds
of streams wait at once. A turn of a computing backend (extractive) runs `run_turn` whole in one
pool thread. Either way the turn runs to the end, whoever listens: a client that goes away
mid-answer cancels only the forwarding, never the turn, so the answer is stored
(invariant 6, docs/architecture.md).

No thread ever waits for a listener: the turn appends each event and wakes an asynchronous
listener with `loop.call_soon_threadsafe`. (Waiting with `asyncio.to_thread` would park one
thread of the event loop's small default executor per open stream, so a few slow streams would
stall every other stream and websocket in the process.)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from agents import turn_loop
from agents.chat import TurnResult, arun_turn, generates_async, run_turn


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
    """`TurnStream(user=..., agent=..., message=..., ...).start()`; then `next_event()` until Done or Failed.

    One listener at a time, from a thread (`next_event`) or an event loop (`await anext_event()`).
    """

    def __init__(self, **turn_kwargs: Any) -> None:
        self._kwargs = turn_kwargs
        self._events: deque[Event] = deque()
        self._arrived = threading.Condition()
        # The asynchronous listener waiting for the next event: its loop and the future to resolve.
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def start(self) -> TurnStream:
        # TOKENCACHE_STREAM_IN_THREADS: the former way, a pool thread per turn for its whole
        # generation; kept for the benchmark's before/after (bench/concurrency.py), off by default.
        if generates_async(self._kwargs["agent"]) and not getattr(settings, "TOKENCACHE_STREAM_IN_THREADS", False):
            turn_loop.submit(self._arun())
        else:
            turn_loop.turn_pool().submit(turn_loop.closing_connections(self._run))
        return self

    def _run(self) -> None:
        try:
            result = run_turn(**self._kwargs, on_delta=self._delta)
        except BaseException as error:
            self._put(Failed(error))
        else:
            self._put(Done(result))

    async def _arun(self) -> None:
        try:
            result = await arun_turn(**self._kwargs, on_delta=self._delta)
        except BaseException as error:
            self._put(Failed(error))
        else:
            self._put(Done(result))

    def _delta(self, text: str) -> None:
        self._put(Delta(text))

    def _put(self, event: Event) -> None:
        with self._arrived:
            self._events.append(event)
            self._arrived.notify()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, woken = waiter
            # RuntimeError: the listener's loop has closed, nobody is left to wake; the turn goes on.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, woken)

    def next_event(self, timeout: float | None = None) -> Event:
        """Block for the next event; raises `queue.Empty` after `timeout` seconds."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._events, timeout):
                raise queue.Empty
            return self._events.popleft()

    async def anext_event(self) -> Event:
        """The next event, awaited on the running loop without holding any thread."""
        loop = asyncio.get_running_loop()
        while True:
            with self._arrived:
                if self._events:
                    return self._events.popleft()
                woken = loop.create_future()
                self._waiter = (loop, woken)
            await woken


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():  # a listener that was cancelled (the client left) has nothing to wake
        woken.set_result(None)
