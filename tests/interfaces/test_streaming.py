"""TurnStream: streams wait on the event loop, not on threads, so slow answers cannot stall fast ones."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.interfaces.test_websocket import QUESTION, communicator, run, session_cookie, until_done

pytestmark = pytest.mark.django_db(transaction=True)

# asyncio's default executor (what `asyncio.to_thread` uses) has this many threads.
DEFAULT_EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)


async def _until(condition, timeout: float = 30) -> None:  # generous: VM stalls
    # The fake model server records requests but offers nothing to await: poll it, bounded.
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_slow_streams_do_not_delay_another_streams_first_event(model_agent, model_server, alice):
    slow_count = DEFAULT_EXECUTOR_THREADS + 2
    # Every modelled turn waits this long for the model's first byte, then streams its answer.
    model_server.knobs.hang_seconds = 3
    cookie = session_cookie(alice)

    async def scenario():
        slow = [communicator("/ws/agents/modelled/", cookie=cookie) for _ in range(slow_count)]
        for n, comm in enumerate(slow, start=1):
            assert (await comm.connect())[0]
            await comm.send_json_to({"type": "message", "message": "Take your time."})
            # One at a time, so the turns' database writes (SQLite in memory here) do not collide.
            await _until(lambda n=n: len(model_server.requests) == n)

        fast = communicator("/ws/agents/support/", cookie=cookie)  # the extractive backend: no model
        assert (await fast.connect())[0]
        started = time.monotonic()
        await fast.send_json_to({"type": "message", "message": QUESTION})
        first = await fast.receive_json_from(timeout=10)
        waited = time.monotonic() - started
        fast_frames = [first, *await until_done(fast)] if first["type"] == "delta" else [first]

        slow_ends = [(await until_done(comm))[-1]["type"] for comm in slow]
        for comm in [*slow, fast]:
            await comm.disconnect()
        return first, waited, fast_frames[-1], slow_ends

    first, waited, last, slow_ends = run(scenario)
    assert first["type"] == "delta"
    assert waited < 1.0, f"the first event took {waited:.2f} s behind {slow_count} slow streams"
    assert last["type"] == "done"
    assert slow_ends == ["done"] * slow_count
