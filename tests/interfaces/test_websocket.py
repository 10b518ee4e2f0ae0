"""ws/agents/<slug>/: session-authenticated, origin-checked, streamed, and robust to bad frames.

Tests drive the production ASGI application (`tokencache_project.asgi.application`:
origin validator, session auth, routing) with Channels' `WebsocketCommunicator`, and
once over a real socket with the `websockets` client against uvicorn.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client

from agents import ratelimit
from agents.models import Conversation, Message
from tests.interfaces.conftest import wait_for_answer
from tokencache_project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What do I do when Redis is down?"


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return async_to_sync(fn)()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def communicator(path: str, *, cookie: str | None = None, origin: str = "http://testserver") -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode())]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


# How long a test waits for a frame that must come. Generous: on a shared VM the whole process
# can stall for seconds, and a passing test never waits for it. Tests that check that nothing
# comes use short waits of their own.
ARRIVES = 30.0


async def until_done(comm: WebsocketCommunicator, timeout: float = ARRIVES) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await comm.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


def test_it_streams_deltas_then_done_with_the_stored_answer(demo, alice):
    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/support/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": QUESTION, "conversation_id": None})
        frames = await until_done(comm)
        await comm.send_json_to(
            {"type": "message", "message": "And then?", "conversation_id": frames[-1]["conversation_id"]}
        )
        followup = await until_done(comm)
        await comm.disconnect()
        return frames, followup

    frames, followup = run(scenario)
    deltas, done = frames[:-1], frames[-1]
    assert len(deltas) > 1 and all(f["type"] == "delta" for f in deltas)
    assert set(done) == {"type", "message_id", "conversation_id", "citations", "cache", "timings"}
    answer = Message.objects.get(pk=done["message_id"])
    assert "".join(f["text"] for f in deltas) == answer.content
    assert done["citations"] == answer.citations and done["citations"]
    assert followup[-1]["type"] == "done" and followup[-1]["conversation_id"] == done["conversation_id"]
    assert Message.objects.filter(conversation_id=done["conversation_id"]).count() == 4


@pytest.mark.parametrize(
    ("persona", "path", "origin", "accepted", "close_code"),
    [
        ("anonymous", "/ws/agents/support/", "http://testserver", False, 4401),
        ("bob", "/ws/agents/support/", "http://testserver", False, 4403),
        ("alice", "/ws/agents/support/", "http://testserver", True, None),
        ("root", "/ws/agents/support/", "http://testserver", True, None),
        ("alice", "/ws/agents/business/", "http://testserver", False, 4403),
        ("root", "/ws/agents/business/", "http://testserver", True, None),
        ("alice", "/ws/agents/nope/", "http://testserver", False, 4404),
        ("alice", "/ws/agents/%00/", "http://testserver", False, 4404),  # PostgreSQL: DataError if queried
        ("alice", "/ws/agents/a%00b/", "http://testserver", False, 4404),
        ("alice", "/ws/agents/support/", "http://evil.example", False, None),
        # Paths no app routes: refused like an unknown agent, for anyone
        ("alice", "/ws/nope/", "http://testserver", False, 4404),
        ("alice", "/ws/agents/support", "http://testserver", False, 4404),
        ("alice", "/ws/a%0Ab/", "http://testserver", False, 4404),  # a newline, which "." does not match
        ("anonymous", "/api/agents/", "http://testserver", False, 4404),
    ],
)
def test_who_may_connect(demo, alice, bob, root, persona, path, origin, accepted, close_code):
    users = {"alice": alice, "bob": bob, "root": root}
    cookie = session_cookie(users[persona]) if persona in users else None

    async def scenario():
        comm = communicator(path, cookie=cookie, origin=origin)
        result = await comm.connect()
        if result[0]:
            await comm.disconnect()
        return result

    connected, code = run(scenario)
    assert connected is accepted
    if close_code is not None:
        assert code == close_code


def _deactivate(user: User) -> None:
    User.objects.filter(pk=user.pk).update(is_active=False)


def _log_out_everywhere(user: User) -> None:
    Session.objects.all().delete()


def _change_password(user: User) -> None:
    user.set_password("a new secret")  # invalidates the session's auth hash, as in Django's HTTP requests
    user.save()


def _leave_every_group(user: User) -> None:
    user.groups.clear()


@pytest.mark.parametrize(
    ("end_access", "code", "close_code"),
    [
        (_deactivate, "unauthorized", 4401),
        (_log_out_everywhere, "unauthorized", 4401),
        (_change_password, "unauthorized", 4401),
        (_leave_every_group, "agent_not_permitted", 4403),
    ],
    ids=["deactivated", "session deleted", "password changed", "left the agent's group"],
)
def test_an_open_socket_loses_access_with_its_user(demo, alice, end_access, code, close_code):
    # The user is read again for every turn, not only at connect: an open socket is no back door.
    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/support/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": QUESTION})
        answered = await until_done(comm)
        await database_sync_to_async(end_access)(alice)
        await comm.send_json_to({"type": "message", "message": QUESTION})
        refused = await comm.receive_json_from(timeout=ARRIVES)
        closed = await comm.receive_output(timeout=ARRIVES)
        return answered[-1], refused, closed

    answered, refused, closed = run(scenario)
    assert answered["type"] == "done"
    assert refused["type"] == "error" and refused["code"] == code and refused["message"]
    assert closed == {"type": "websocket.close", "code": close_code}
    assert Message.objects.count() == 2  # the refused question was not stored


def test_bad_frames_get_error_frames_and_the_socket_stays_usable(demo, alice, charlie):
    charlies = Conversation.objects.create(agent=demo.agents["business"], user=charlie)
    bad = [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_request"),
        ('"message"', "invalid_request"),
        ('{"type": "shout", "message": "hi"}', "unknown_type"),
        ('{"message": "hi"}', "unknown_type"),
        ('{"type": "message"}', "invalid_message"),
        ('{"type": "message", "message": 42}', "invalid_message"),
        ('{"type": "message", "message": "   "}', "invalid_message"),
        (json.dumps({"type": "message", "message": "a" * 4001}), "message_too_long"),
        (json.dumps({"type": "message", "message": "a" * 70_000}), "frame_too_large"),
        ('{"type": "message", "message": "hi", "conversation_id": "7"}', "invalid_request"),
        ('{"type": "message", "message": "hi", "conversation_id": -3}', "conversation_not_found"),
        (json.dumps({"type": "message", "message": "hi", "conversation_id": charlies.pk}), "conversation_forbidden"),
        ('{"type": "message", "message": "hi", "extra": 1}', "invalid_request"),
        (b"\x00\x01binary", "invalid_frame"),
    ]

    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/support/", cookie=cookie)
        assert (await comm.connect())[0]
        replies = []
        for frame, _ in bad:
            if isinstance(frame, bytes):
                await comm.send_to(bytes_data=frame)
            else:
                await comm.send_to(text_data=frame)
            replies.append(await comm.receive_json_from(timeout=ARRIVES))
        await comm.send_json_to({"type": "message", "message": QUESTION})
        frames = await until_done(comm)
        await comm.disconnect()
        return replies, frames

    replies, frames = run(scenario)
    for (frame, code), reply in zip(bad, replies, strict=True):
        assert reply["type"] == "error" and reply["code"] == code and reply["message"], (frame[:60], reply)
    assert frames[-1]["type"] == "done"
    assert Message.objects.count() == 2  # only the good question and its answer


def test_a_client_that_leaves_mid_answer_loses_nothing(model_agent, model_server, alice):
    # Two pieces, then the model thinks for 3 s: the client leaves well before the end.
    model_server.knobs.stall_after_chunks, model_server.knobs.hang_seconds = 2, 3.0

    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/modelled/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": "Tell me everything."})
        first = await comm.receive_json_from(timeout=ARRIVES)
        await comm.disconnect()
        return first

    first = run(scenario)
    assert first["type"] == "delta"
    assert not Message.objects.filter(role="assistant").exists()  # we left before the end
    answer = wait_for_answer()
    assert answer.status == "ok"
    assert answer.content.startswith(first["text"]) and len(answer.content) > len(first["text"])


@pytest.mark.parametrize(
    ("failure", "code"),
    [("down", "model_unavailable"), ("refuses the request", "model_rejected")],
)
def test_a_failing_model_server_gives_an_error_frame_without_its_details_and_keeps_the_question(
    model_agent, model_server, alice, failure, code
):
    if failure == "down":
        model_server.stop()
    else:
        model_server.knobs.error_status = 400
        model_server.knobs.error_message = "prompt is too long (upstream-secret-detail)"
    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/modelled/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": "Anyone?"})
        frames = await until_done(comm)
        await comm.send_to(text_data="still there?")
        after = await comm.receive_json_from(timeout=ARRIVES)
        await comm.disconnect()
        return frames[-1], after

    error, after = run(scenario)
    assert error["type"] == "error" and error["code"] == code
    assert "127.0.0.1" not in error["message"] and "upstream-secret-detail" not in error["message"]
    question, answer = Message.objects.order_by("pk")
    assert question.content == "Anyone?" and answer.pk == error["message_id"] and answer.status == "error"
    assert after["code"] == "invalid_json"  # the socket is still open and answering


async def _release_and_collect(comm: WebsocketCommunicator, model_server, turns: int) -> list[dict[str, Any]]:
    """Stop the hanging model server, then the last frame of each of `turns` turns (all fail fast now)."""
    await asyncio.to_thread(model_server.stop)
    return [(await until_done(comm))[-1] for _ in range(turns)]


def test_a_socket_holds_one_running_turn_and_two_waiting_then_answers_busy(model_agent, model_server, alice):
    model_server.knobs.hang_seconds = 30  # the first turn waits on the model until stop()
    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/modelled/", cookie=cookie)
        assert (await comm.connect())[0]
        for n in range(4):
            await comm.send_json_to({"type": "message", "message": f"Question {n}"})
        busy = await comm.receive_json_from(timeout=ARRIVES)  # while the first turn still hangs
        finished = await _release_and_collect(comm, model_server, turns=3)
        await comm.send_json_to({"type": "message", "message": "Question 4"})
        later = await until_done(comm)
        await comm.disconnect()
        return busy, finished, later[-1]

    busy, finished, later = run(scenario)
    assert busy["type"] == "error" and busy["code"] == "busy" and busy["message"]
    assert [f["code"] for f in finished] == ["model_unavailable"] * 3
    assert later["code"] == "model_unavailable"  # a later frame is admitted again: busy is not a ban
    asked = Message.objects.filter(role="user").order_by("pk").values_list("content", flat=True)
    assert list(asked) == ["Question 0", "Question 1", "Question 2", "Question 4"]


def test_the_rate_limit_refuses_a_frame_on_arrival_not_when_its_turn_comes(model_agent, model_server, alice, settings):
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 2
    model_server.knobs.hang_seconds = 30
    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/modelled/", cookie=cookie)
        assert (await comm.connect())[0]
        for n in range(3):
            await comm.send_json_to({"type": "message", "message": f"Question {n}"})
        limited = await comm.receive_json_from(timeout=ARRIVES)  # the first turn still hangs: nothing else is sent
        finished = await _release_and_collect(comm, model_server, turns=2)
        await comm.disconnect()
        return limited, finished

    limited, finished = run(scenario)
    assert limited["type"] == "error" and limited["code"] == "rate_limited"
    assert [f["code"] for f in finished] == ["model_unavailable"] * 2
    assert Message.objects.filter(role="user").count() == 2


def test_rate_limit_gives_an_error_frame(demo, alice, settings):
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1

    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/support/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": QUESTION})
        first = await until_done(comm)
        await comm.send_json_to({"type": "message", "message": QUESTION})
        second = await until_done(comm)
        await comm.disconnect()
        return first[-1], second[-1]

    first, second = run(scenario)
    assert first["type"] == "done"
    assert second["type"] == "error" and second["code"] == "rate_limited"


def test_a_real_websocket_client_against_the_running_server(demo, alice, asgi_server):
    cookie = session_cookie(alice)

    async def scenario():
        async with websockets.connect(
            f"{asgi_server.ws_url}/ws/agents/support/",
            origin=asgi_server.url,
            additional_headers={"Cookie": cookie},
        ) as ws:
            await ws.send("not json")
            error = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "message", "message": QUESTION}))
            frames = []
            while not frames or frames[-1]["type"] not in ("done", "error"):
                frames.append(json.loads(await ws.recv()))
            return error, frames

    error, frames = run(scenario)
    assert error["code"] == "invalid_json"
    done = frames[-1]
    assert done["type"] == "done"
    assert "".join(f["text"] for f in frames[:-1]) == Message.objects.get(pk=done["message_id"]).content


@pytest.mark.parametrize("path", ["/ws/agents/support/", "/ws/no-such-socket/"])
def test_the_running_server_refuses_anonymous_sockets_and_unknown_paths(demo, asgi_server, path, caplog):
    async def scenario():
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(f"{asgi_server.ws_url}{path}", origin=asgi_server.url):
                pass
        return refused.value.response.status_code

    with caplog.at_level(logging.ERROR):
        assert run(scenario) == 403
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]  # no traceback logged


def test_websocket_chat_keeps_working_when_redis_is_down(demo, alice, settings, redis_factory):
    # The consumer needs no channel layer, so a dead channel-layer Redis must not matter (invariant 4).
    dead = redis_factory()
    dead.stop()
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [dead.url(2)]}}
    }
    settings.REDIS_URL = dead.url(0)
    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/support/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": QUESTION})
        frames = await until_done(comm)
        await comm.disconnect()
        return frames

    assert run(scenario)[-1]["type"] == "done"


def test_a_waiting_turn_whose_user_lost_the_agent_closes_the_socket_with_4403(model_agent, model_server, alice):
    # Admitted on arrival, refused when its turn comes: the same close as at connect, not an open socket.
    model_server.knobs.hang_seconds = 30  # the first turn waits on the model until stop()
    cookie = session_cookie(alice)
    counters = ratelimit._limiter().client

    def admitted() -> int:
        return sum(int(counters.get(key) or 0) for key in counters.keys(f"tc:rl:chat:{alice.pk}:*"))

    async def scenario():
        comm = communicator("/ws/agents/modelled/", cookie=cookie)
        assert (await comm.connect())[0]
        await comm.send_json_to({"type": "message", "message": "Question 0"})
        await comm.send_json_to({"type": "message", "message": "Question 1"})
        await comm.send_json_to({"type": "message", "message": "Question 2"})
        while admitted() < 3:  # the limiter counts a frame last in its admission
            await asyncio.sleep(0.01)
        await database_sync_to_async(_leave_every_group)(alice)
        first = await _release_and_collect(comm, model_server, turns=1)
        refused = await comm.receive_json_from(timeout=ARRIVES)
        closed = await comm.receive_output(timeout=ARRIVES)
        return first[0], refused, closed, await comm.receive_nothing(timeout=0.3)

    first, refused, closed, nothing_after = run(scenario)
    assert first["code"] == "model_unavailable"
    assert refused["type"] == "error" and refused["code"] == "agent_not_permitted"
    assert closed == {"type": "websocket.close", "code": 4403}
    assert nothing_after  # the third question was dropped with the socket, not answered
    asked = Message.objects.filter(role="user").values_list("content", flat=True)
    assert list(asked) == ["Question 0"]


def test_one_sockets_slow_admission_does_not_hold_up_another_sockets_frame(demo, alice, charlie, monkeypatch):
    # Every rate-limiter connection is busy, and the limiter waits POOL_WAIT_SECONDS for one: socket A's
    # admission blocks in its database thread. Socket B's frame needs only the database; were all sockets'
    # database work one thread (channels' thread-sensitive default), B would wait for A's 10 s.
    monkeypatch.setattr(ratelimit, "POOL_WAIT_SECONDS", 10.0)
    charlies = Conversation.objects.create(agent=demo.agents["business"], user=charlie)
    slots = ratelimit._limiter().slots
    size = settings.TOKENCACHE_POOL_SIZE
    cookie = session_cookie(alice)

    async def a_is_waiting_for_the_limiter() -> None:
        while not slots._cond._waiters:  # CPython's Condition: the threads blocked in acquire()
            await asyncio.sleep(0.01)

    async def scenario():
        a = communicator("/ws/agents/support/", cookie=cookie)
        b = communicator("/ws/agents/support/", cookie=cookie)
        assert (await a.connect())[0] and (await b.connect())[0]
        for _ in range(size):
            assert slots.acquire(timeout=1)
        held = size
        try:
            await a.send_json_to({"type": "message", "message": QUESTION})
            await asyncio.wait_for(a_is_waiting_for_the_limiter(), timeout=5)
            await b.send_json_to({"type": "message", "message": "hi", "conversation_id": charlies.pk})
            b_reply = await b.receive_json_from(timeout=3)  # well within A's 10 s wait
            a_still_waiting = await a.receive_nothing(timeout=0.05)
        finally:
            for _ in range(held):
                slots.release()
        a_frames = await until_done(a)
        await a.disconnect()
        await b.disconnect()
        return b_reply, a_still_waiting, a_frames[-1]

    b_reply, a_still_waiting, a_done = run(scenario)
    assert b_reply["type"] == "error" and b_reply["code"] == "conversation_forbidden"
    assert a_still_waiting
    assert a_done["type"] == "done"  # A was admitted once a connection was free


def test_socket_database_work_leaves_no_connection_open_in_its_threads(demo, alice):
    # With CONN_MAX_AGE 0 (the PostgreSQL run's), like a request, each piece of a socket's database
    # work closes its connection.
    if connection.vendor == "sqlite":
        pytest.skip("Django never closes an in-memory SQLite connection (it would drop the database)")
    cookie = session_cookie(alice)

    async def scenario():
        comm = communicator("/ws/agents/support/", cookie=cookie)
        assert (await comm.connect())[0]
        for _ in range(3):
            await comm.send_json_to({"type": "message", "message": QUESTION})
            await until_done(comm)
        await comm.disconnect()

    run(scenario)
    pool_threads = {t.ident for t in threading.enumerate() if t.name.startswith("ws-db")}
    # type(), not isinstance(): gc also holds weak proxies, and isinstance() on a dead one raises.
    open_in_pool = [
        wrapper
        for wrapper in gc.get_objects()
        if issubclass(type(wrapper), BaseDatabaseWrapper)
        and wrapper.connection is not None
        and wrapper._thread_ident in pool_threads
    ]
    assert pool_threads and open_in_pool == []
