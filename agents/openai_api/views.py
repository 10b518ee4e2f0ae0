"""`GET /v1/models` and `POST /v1/chat/completions`, OpenAI's shapes over the one chat service.

A model is an agent (id = slug). Each completion request is a new conversation whose
history is what the client sent, as OpenAI's API is stateless. The answer's citations
and Tokencache's own records ride along in extra fields (`citations`, `tokencache`),
which OpenAI clients keep (the `openai` package exposes them as attributes).

Streaming: the turn starts before the response does, and the response waits for its first
event (on the server's event loop, agents/interfaces/awaited.py), so an error before any text
(model server down: 503, the user's message kept) still gets a real status code. An error
after text has been sent arrives as an SSE `error` event, which the `openai` package raises
as `APIError`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from agents import selectors
from agents.chat import TurnResult
from agents.errors import ChatError
from agents.interfaces import render
from agents.interfaces.awaited import answer_turn, stream_turn
from agents.interfaces.decorators import ApiRequest, api_endpoint
from agents.interfaces.errors import ApiError, as_api_error
from agents.openai_api.bodies import CompletionBody
from agents.openai_api.errors import error_body, openai_error
from agents.streaming import Delta, Done, Event, Failed, TurnStream
from agents.turns import prepare_turn

OWNER = "tokencache"


@api_endpoint("GET", render=openai_error)
def models(call: ApiRequest[None]) -> HttpResponse:
    data = [
        {"id": agent.slug, "object": "model", "created": 0, "owned_by": OWNER, "name": agent.name}
        for agent in selectors.agents_for_user(call.user)
    ]
    return JsonResponse({"object": "list", "data": data})


@api_endpoint("POST", body=CompletionBody, render=openai_error)
def chat_completions(call: ApiRequest[CompletionBody]) -> HttpResponseBase:
    body = call.body
    admitted = prepare_turn(user=call.user, slug=body.model, conversation_id=None)
    turn: dict[str, Any] = {
        "user": admitted.user,
        "agent": admitted.agent,
        "message": body.message,
        "history": body.history,
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
    }
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not body.stream:
        return answer_turn(
            call.http,
            turn,
            lambda result: JsonResponse(_completion(completion_id, created, body.model, result)),
            openai_error,
        )

    def events(stream: TurnStream, first: Event) -> StreamingHttpResponse:
        response = StreamingHttpResponse(
            _sse(stream, first, completion_id=completion_id, created=created, body=body),
            content_type="text/event-stream",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx must not buffer the stream
        return response

    return stream_turn(call.http, turn, events, openai_error)


def _usage(result: TurnResult) -> dict[str, int]:
    usage = render.plain(result.usage)
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extras(result: TurnResult) -> dict[str, Any]:
    turn = render.turn(result)
    return {
        "citations": turn.pop("citations"),
        "tokencache": {k: turn[k] for k in ("conversation_id", "message_id", "cache", "timings")},
    }


def _completion(completion_id: str, created: int, model: str, result: TurnResult) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(result),
        **_extras(result),
    }


def _frame(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _sse(
    stream: TurnStream, first: Event, *, completion_id: str, created: int, body: CompletionBody
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return _frame(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [choice],
                **extra,
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    event = first
    while isinstance(event, Delta):
        yield chunk({"content": event.text})
        event = await stream.anext_event()
    if isinstance(event, Failed):
        error = event.error
        api_error = (
            as_api_error(error)
            if isinstance(error, ChatError)
            else ApiError(500, "internal_error", "The answer failed part way; it was not stored as complete.")
        )
        yield _frame(error_body(api_error))
        yield b"data: [DONE]\n\n"
        return
    assert isinstance(event, Done)
    yield chunk({}, "stop", **_extras(event.result))
    if body.include_usage:
        yield _frame(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [],
                "usage": _usage(event.result),
            }
        )
    yield b"data: [DONE]\n\n"


@csrf_exempt  # changes nothing; Django's CSRF failure page would break the error shape
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return openai_error(ApiError(404, "not_found", f"No endpoint at {request.path[:200]!r}."))
