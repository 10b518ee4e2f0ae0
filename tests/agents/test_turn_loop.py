"""Streaming turns wait on the turn loop, not on threads; model-server connections are pooled."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from agents import turn_loop
from agents.backends import openai as openai_backend
from agents.backends.openai import OpenAIBackend
from agents.models import Message
from agents.streaming import Done, TurnStream
from tests.agents.test_backends_openai import build_prompt
from tests.agents.test_chat import modeled  # noqa: F401  (a fixture)
from tests.support.fake_model_server import FakeModelServer

pytestmark = pytest.mark.django_db(transaction=True)


def _until(condition, timeout: float = 30) -> None:  # generous: VM stalls
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_more_streaming_turns_than_turn_threads_all_wait_on_the_model_at_once(
    modeled,  # noqa: F811
    model_server,
    root,
):
    count = turn_loop.turn_threads() + 8
    # Every turn waits this long for the model's first byte: a turn holding a thread while it waits
    # would leave the last 8 queued behind the others until these hangs end.
    model_server.knobs.hang_seconds = 8
    streams = []
    started = time.monotonic()
    for n in range(1, count + 1):
        streams.append(TurnStream(user=root, agent=modeled, message=f"Question {n}?").start())
        # One at a time, so the turns' database writes (SQLite in memory here) do not collide.
        _until(lambda n=n: len(model_server.requests) == n)
    all_waiting_after = time.monotonic() - started
    model_server.resume()

    ends = [_last_event(stream) for stream in streams]
    assert all_waiting_after < 8, f"the {count} turns reached the model only after {all_waiting_after:.1f} s"
    assert all(isinstance(end, Done) for end in ends)
    assert Message.objects.filter(role="assistant", status="ok").count() == count


def _last_event(stream: TurnStream):
    while True:
        event = stream.next_event(timeout=30)
        if not hasattr(event, "text"):
            return event


def test_consecutive_answers_reuse_one_connection_to_the_model_server(model_server: FakeModelServer) -> None:
    backend = OpenAIBackend(base_url=model_server.base_url, model=model_server.model)
    for _ in range(3):
        assert backend.generate(build_prompt(), max_tokens=8, temperature=0.0).text
        # The end of each response is read in the background; its connection is free once read.
        turn_loop.run_in_turn_loop(_drained())

    assert len({request.client_port for request in model_server.requests}) == 1


async def _drained() -> None:
    await asyncio.gather(*openai_backend._draining)


def test_a_synchronous_callers_deltas_arrive_in_its_own_thread(model_server: FakeModelServer) -> None:
    threads = set()
    backend = OpenAIBackend(base_url=model_server.base_url, model=model_server.model)
    generation = backend.generate(
        build_prompt(), max_tokens=8, temperature=0.0, on_delta=lambda _: threads.add(threading.get_ident())
    )
    assert generation.text and threads == {threading.get_ident()}


def test_a_failing_synchronous_listener_abandons_the_stream(model_server: FakeModelServer) -> None:
    model_server.knobs.chunk_delay_seconds = 0.2
    backend = OpenAIBackend(base_url=model_server.base_url, model=model_server.model)

    def refuse(_: str) -> None:
        raise ConnectionResetError("the caller went away")

    started = time.monotonic()
    with pytest.raises(ConnectionResetError):
        backend.generate(build_prompt(), max_tokens=8, temperature=0.0, on_delta=refuse)
    assert time.monotonic() - started < 1.0  # not read to the end (8 pieces, 0.2 s apart)


def test_blocking_on_the_turn_loop_from_the_turn_loop_is_refused(model_server: FakeModelServer) -> None:
    backend = OpenAIBackend(base_url=model_server.base_url, model=model_server.model)

    async def blocking() -> None:
        backend.generate(build_prompt(), max_tokens=8, temperature=0.0)

    with pytest.raises(RuntimeError, match="block the turn loop"):
        turn_loop.run_in_turn_loop(blocking())


def test_a_process_that_exits_lets_its_running_turns_finish(tmp_path) -> None:
    import subprocess
    import sys

    marker = tmp_path / "answer-stored"
    script = (
        "import asyncio, pathlib\n"
        "from agents import turn_loop\n"
        "async def turn():\n"
        "    await asyncio.sleep(0.5)  # the model still streaming when the process is told to stop\n"
        f"    pathlib.Path({str(marker)!r}).write_text('stored')\n"
        "turn_loop.submit(turn())\n"
    )
    # Generous: under a loaded CI machine the child spends seconds importing Django before the turn even starts.
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, cwd=str(Path(__file__).parents[2]))

    assert marker.read_text() == "stored"
