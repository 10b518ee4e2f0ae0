"""Websocket chat: `ws/agents/<slug>/`, the same turn as the JSON API, streamed frame by frame.

Client frames: `{"type": "message", "message": "...", "conversation_id": <id or null>}`.
Server frames: `{"type": "delta", "text"}`..., then `{"type": "done", "message_id",
"conversation_id", "citations", "cache", "timings"}`, or `{"type": "error", "code", "message"}`.

A socket outlives the login that opened it, so every turn asks the database again who is
asking: a user who was deactivated, logged out (session deleted) or changed their password
gets an `unauthorized` error frame and the socket is closed with 4401; one who lost the
agent gets `agent_not_permitted` (or `agent_not_found`) and 4403 (4404), as at connect.

A bad frame gets an error frame and the socket stays open. Each frame is admitted as it
arrives (agent, conversation, rate limit: `prepare_turn`) and again, uncharged, when its
turn comes up after waiting behind another (`confirm_turn`); turns on one socket run one after another, in order, in a
worker thread (`TurnStream`), with at most `MAX_WAITING_TURNS` waiting: a frame beyond that
gets a `busy` error frame. Frames keep being read meanwhile, so a bad frame is answered at
once and a disconnect is noticed at once. On disconnect only the forwarding stops: the
running turn runs to the end and its answer is stored; turns still waiting are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ParamSpec, TypeVar, cast

import orjson
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import User
from django.db import close_old_connections
from django.http import HttpRequest

from agents import selectors
from agents.errors import AgentNotFound, AgentNotPermitted, ChatError
from agents.interfaces import render
from agents.interfaces.bodies import chat_message, expect_object, optional_id
from agents.interfaces.errors import ApiError, as_api_error, turn_failure
from agents.streaming import Delta, Done, Failed, TurnStream
from agents.turns import TurnRequest, confirm_turn, prepare_turn

logger = logging.getLogger(__name__)

# Close codes for refused connections (4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_PERMITTED = 4403
CLOSE_NOT_FOUND = 4404
SESSION_ENDED = ApiError(401, "unauthorized", "Your session has ended; log in again.")
# One turn runs per socket and at most this many more wait behind it; each waiting turn is a
# stored question and a rate-limit unit already spent, so the queue stays short.
MAX_WAITING_TURNS = 2
BUSY = ApiError(
    429,
    "busy",
    f"One answer is being written and {MAX_WAITING_TURNS} more questions are waiting on this socket; "
    "send this one again when an answer is done.",
)


P = ParamSpec("P")
R = TypeVar("R")

# Database work of the sockets (admission, which may wait up to 0.5 s for the rate limiter, and
# reloading the user) runs in this pool, in parallel. Channels' `database_sync_to_async` is
# thread-sensitive and Channels opens no ThreadSensitiveContext per connection, so it would run
# every socket's database work of the process one call at a time on one shared thread: one slow
# admission would hold up every other socket. Bounded, so a flood of frames queues here instead
# of opening a database connection per frame.
_database_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ws-db")


def in_database_thread(fn: Callable[P, R]) -> Callable[P, Any]:
    """`fn` as a coroutine function run in `_database_pool`, not on the shared thread-sensitive thread.

    Old connections are closed before and after the call, as Django does around each request: a
    pool thread is long-lived and must not keep a connection past CONN_MAX_AGE (0: after every
    call) or one the database dropped. Closed inside the call itself, not around it as Channels'
    `DatabaseSyncToAsync.thread_handler` does: asgiref runs the call in a copy of the caller's
    context, where Django's connection storage is not the one `thread_handler` sees, so that
    variant, not thread-sensitive, left every pool thread holding its connection open.
    """

    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(closing, thread_sensitive=False, executor=_database_pool)


class SessionEnded(Exception):
    """The socket's login is no longer valid: its session is gone or its user may not log in."""


@dataclass(frozen=True)
class MessageFrame:
    message: str
    conversation_id: int | None


def parse_frame(text_data: str | None, bytes_data: bytes | None) -> MessageFrame:
    if text_data is None:
        raise ApiError(400, "invalid_frame", "Send text frames holding JSON, not binary frames.")
    if len(text_data.encode("utf-8", "surrogatepass")) > settings.TOKENCACHE_MAX_BODY_BYTES:
        raise ApiError(413, "frame_too_large", f"Frames are limited to {settings.TOKENCACHE_MAX_BODY_BYTES} bytes.")
    try:
        data = orjson.loads(text_data)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "The frame is not valid JSON.") from None
    fields = expect_object(data, allowed=("type", "message", "conversation_id"))
    if fields.get("type") != "message":
        raise ApiError(400, "unknown_type", 'The frame\'s `type` must be "message".')
    return MessageFrame(
        message=chat_message(fields.get("message")),
        conversation_id=optional_id(fields.get("conversation_id"), field="conversation_id"),
    )


class AgentChatConsumer(AsyncWebsocketConsumer):
    # Each socket talks only to its own turn, never to a group, so it needs no channel layer; without
    # this, Channels would subscribe every socket to the Redis channel layer and a Redis outage would
    # kill websocket chat (invariant 4, docs/architecture.md). `get_channel_layer(None)` is None.
    channel_layer_alias = None

    slug: str

    async def connect(self) -> None:
        self.turns: set[asyncio.Task[None]] = set()
        self.in_order = asyncio.Lock()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.slug = self.scope["url_route"]["kwargs"]["slug"]
        try:
            await in_database_thread(selectors.get_agent_for_user)(user, self.slug)
        except ChatError as error:
            await self.close(code=CLOSE_NOT_PERMITTED if error.status == 403 else CLOSE_NOT_FOUND)
            return
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for task in self.turns:
            task.cancel()  # stops the forwarding only; TurnStream's thread finishes and stores the answer

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Admission happens here, as each frame arrives, not when its turn comes up: a frame that
        # is over the rate limit, or past the socket's queue, is refused at once and never waits.
        try:
            frame = parse_frame(text_data, bytes_data)
            if len(self.turns) > MAX_WAITING_TURNS:
                raise BUSY
            turn = await in_database_thread(self._admit)(frame)
        except (SessionEnded, ApiError, ChatError) as error:
            await self.refuse(error)
            return
        # A turn that starts at once was admitted a moment ago: only one that waits behind another
        # is admitted again when it starts (its user may have lost the agent meanwhile).
        task = asyncio.create_task(self.run_turn(frame.message, turn, confirm=bool(self.turns)))
        self.turns.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.turns.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Typically the client went away while we were sending; the turn itself is unaffected.
            logger.info("websocket_forwarding_stopped", extra={"error": repr(task.exception())})

    async def run_turn(self, message: str, turn: TurnRequest, *, confirm: bool = True) -> None:
        async with self.in_order:
            try:
                # The login may have ended, or the user lost the agent, while this turn waited.
                if confirm:
                    turn = await in_database_thread(self._confirm)(turn)
            except (SessionEnded, ChatError) as error:
                await self.refuse(error)
                return
            stream = TurnStream(
                user=turn.user, agent=turn.agent, message=message, conversation=turn.conversation
            ).start()
            while True:
                event = await stream.anext_event()
                if isinstance(event, Delta):
                    await self.send_json({"type": "delta", "text": event.text})
                elif isinstance(event, Done):
                    done = render.turn(event.result)
                    done.pop("answer")
                    await self.send_json({"type": "done", **done})
                    return
                elif isinstance(event, Failed):
                    await self.send_error(turn_failure(event.error))
                    return

    async def refuse(self, error: SessionEnded | ApiError | ChatError) -> None:
        """Answer a refused frame with an error frame; close the socket if no later frame could succeed."""
        if isinstance(error, SessionEnded):
            await self.send_error(SESSION_ENDED)
            await self.close_for_good(CLOSE_UNAUTHENTICATED)
        elif isinstance(error, ApiError):
            await self.send_error(error)
        else:
            await self.send_error(as_api_error(error))
            if isinstance(error, AgentNotPermitted | AgentNotFound):
                # The socket is bound to this agent.
                await self.close_for_good(CLOSE_NOT_PERMITTED if error.status == 403 else CLOSE_NOT_FOUND)

    async def close_for_good(self, code: int) -> None:
        """Close the socket; turns still waiting behind the lock are dropped, as on disconnect.

        The current task (the turn that found out) is left alone: it returns after this.
        """
        current = asyncio.current_task()
        for task in self.turns:
            if task is not current:
                task.cancel()
        await self.close(code=code)

    def _admit(self, frame: MessageFrame) -> TurnRequest:
        return prepare_turn(user=self._current_user(), slug=self.slug, conversation_id=frame.conversation_id)

    def _confirm(self, turn: TurnRequest) -> TurnRequest:
        return confirm_turn(user=self._current_user(), turn=turn)

    def _current_user(self) -> User:
        """The socket's user as the database has them now, checked as Django checks each HTTP request.

        `scope["user"]` was loaded once, at connect. Reloading the session by its key and the user
        through `auth.get_user` sees a deleted session, a deactivated user and a changed password
        (the session's auth hash) alike; flags and groups are then fresh for the selectors.
        """
        session_key = self.scope["session"].session_key
        if session_key is None:
            raise SessionEnded
        request = HttpRequest()
        request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = auth.get_user(request)
        if not user.is_authenticated or user.pk != self.scope["user"].pk:
            raise SessionEnded
        return cast(User, user)

    async def send_error(self, error: ApiError) -> None:
        await self.send_json({"type": "error", "code": error.code, "message": error.message, **error.extra})

    async def send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=orjson.dumps(payload).decode("utf-8"))
