"""JSON API views: parse (done by the decorator), authorize (selectors, `prepare_turn`), call the service, render."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from agents import selectors
from agents.errors import ConversationNotFound
from agents.interfaces import render
from agents.interfaces.awaited import answer_turn
from agents.interfaces.bodies import ChatBody, ascii_int
from agents.interfaces.decorators import ApiRequest, api_endpoint
from agents.interfaces.errors import ApiError, json_error
from agents.turns import prepare_turn

SCHEMA_PATH = Path(__file__).with_name("openapi.json")
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 500


@api_endpoint("GET")
def agent_list(call: ApiRequest[None]) -> HttpResponse:
    return JsonResponse({"agents": [render.agent(a) for a in selectors.agents_for_user(call.user)]})


@api_endpoint("POST", body=ChatBody)
def chat(call: ApiRequest[ChatBody], slug: str) -> HttpResponseBase:
    turn = prepare_turn(user=call.user, slug=slug, conversation_id=call.body.conversation_id)
    return answer_turn(
        call.http,
        {"user": turn.user, "agent": turn.agent, "message": call.body.message, "conversation": turn.conversation},
        lambda result: JsonResponse(render.turn(result)),
        json_error,
    )


@api_endpoint("GET")
def conversation_list(call: ApiRequest[None]) -> HttpResponse:
    limit = _limit(call.http.GET.get("limit"))
    conversations = selectors.conversations_for_user(call.user)[:limit]
    return JsonResponse({"conversations": [render.conversation(c) for c in conversations]})


def _limit(raw: str | None) -> int:
    if raw is None:
        return LIST_LIMIT_DEFAULT
    limit = ascii_int(raw)
    if limit is None or not 1 <= limit <= LIST_LIMIT_MAX:
        raise ApiError(400, "invalid_request", f"`limit` must be an integer from 1 to {LIST_LIMIT_MAX}.")
    return limit


@api_endpoint("GET", "DELETE")
def conversation_detail(call: ApiRequest[None], conversation_id: str) -> HttpResponse:
    # The route takes any path segment so that "abc" or "-1" get this API's 404, not Django's HTML page.
    pk = ascii_int(conversation_id)
    if pk is None:
        raise ConversationNotFound(f"No conversation {conversation_id[:40]!r}.")
    conversation = selectors.get_conversation_for_user(call.user, pk)
    if call.http.method == "DELETE":
        conversation.delete()
        return HttpResponse(status=204)
    return JsonResponse(
        {
            **render.conversation(conversation),
            "messages": [render.message(m) for m in conversation.messages.order_by("created", "id")],
        }
    )


@cache
def _schema_bytes() -> bytes:
    # Parsed and re-serialised once: a malformed schema file fails loudly on the first request and in tests.
    return orjson.dumps(orjson.loads(SCHEMA_PATH.read_bytes()))


# csrf_exempt: these views change nothing, and Django's CSRF failure page would break the error shape.
@csrf_exempt
def schema(request: HttpRequest) -> HttpResponse:
    """The OpenAPI description; public, like any API's documentation."""
    if request.method not in ("GET", "HEAD"):
        return json_error(ApiError(405, "method_not_allowed", "Use GET.", headers={"Allow": "GET, HEAD"}))
    return HttpResponse(_schema_bytes(), content_type="application/json")


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return json_error(ApiError(404, "not_found", f"No API endpoint at {request.path[:200]!r}."))
