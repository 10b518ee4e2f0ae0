"""Staff-only JSON endpoints for the token cache: warm it, watch a run, free entries.

The same services as the admin's actions and the management commands (agents/warming.py,
agents/invalidation.py); anyone else gets 403 in the API's error shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from django.http import HttpResponse, JsonResponse

from agents.interfaces.bodies import ascii_int, expect_object, optional_id
from agents.interfaces.decorators import ApiRequest, api_endpoint
from agents.interfaces.errors import ApiError, invalid_request
from agents.invalidation import forget_agent, forget_document, forget_tokenizer
from agents.models import Agent, KnowledgeDocument, WarmingRun
from agents.warming import request_warming
from cachecore.exceptions import TokenizerUnavailable

STAFF_ONLY = ApiError(403, "staff_only", "Only staff may manage the token cache.")


def _agent(slug: object) -> Agent:
    if not isinstance(slug, str):
        raise invalid_request("`agent` must be an agent's slug.")
    agent = Agent.objects.filter(slug=slug[:50]).first() if slug else None
    if agent is None:
        raise ApiError(404, "agent_not_found", f"No agent named {slug[:50]!r}.")
    return agent


@dataclass(frozen=True)
class WarmBody:
    agent: Agent | None

    @classmethod
    def parse(cls, data: object) -> Self:
        fields = expect_object(data, allowed=("agent",))
        return cls(agent=None if fields.get("agent") is None else _agent(fields["agent"]))


@dataclass(frozen=True)
class InvalidateBody:
    agent: Agent | None
    document: KnowledgeDocument | None
    tokenizer: str | None

    @classmethod
    def parse(cls, data: object) -> Self:
        fields = expect_object(data, allowed=("agent", "document_id", "tokenizer"))
        given = [name for name in ("agent", "document_id", "tokenizer") if fields.get(name) is not None]
        if len(given) != 1:
            raise invalid_request("Give exactly one of `agent`, `document_id` and `tokenizer`.")
        document = None
        if "document_id" in given:
            pk = optional_id(fields["document_id"], field="document_id") or 0
            document = KnowledgeDocument.objects.select_related("agent").filter(pk=pk).first()
            if document is None:
                raise ApiError(404, "document_not_found", f"No document {pk}.")
        tokenizer = fields.get("tokenizer")
        if tokenizer is not None and (not isinstance(tokenizer, str) or not 0 < len(tokenizer) <= 500):
            raise invalid_request("`tokenizer` must be a tokenizer spec such as tiktoken:cl100k_base.")
        return cls(agent=_agent(fields["agent"]) if "agent" in given else None, document=document, tokenizer=tokenizer)


def render_run(run: WarmingRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "agent": run.agent.slug if run.agent else None,
        "reason": run.reason,
        "status": run.status,
        "total_chunks": run.total_chunks,
        "done_chunks": run.done_chunks,
        "already_cached": run.already_cached,
        "tokens_written": run.tokens_written,
        "tokens_per_second": run.tokens_per_second,
        "requested": run.requested.isoformat(),
        "finished": run.finished.isoformat() if run.finished else None,
        "error": run.error,
    }


@api_endpoint("POST", body=WarmBody)
def warm(call: ApiRequest[WarmBody]) -> HttpResponse:
    if not call.user.is_staff:
        raise STAFF_ONLY
    run = request_warming(agent=call.body.agent, reason=WarmingRun.Reason.API)
    return JsonResponse({"run": render_run(run)}, status=202)


@api_endpoint("GET")
def warming_run(call: ApiRequest[None], run_id: str) -> HttpResponse:
    if not call.user.is_staff:
        raise STAFF_ONLY
    pk = ascii_int(run_id)
    run = WarmingRun.objects.select_related("agent").filter(pk=pk).first() if pk else None
    if run is None:
        raise ApiError(404, "run_not_found", f"No warming run {run_id[:40]!r}.")
    return JsonResponse({"run": render_run(run)})


@api_endpoint("POST", body=InvalidateBody)
def invalidate(call: ApiRequest[InvalidateBody]) -> HttpResponse:
    if not call.user.is_staff:
        raise STAFF_ONLY
    body = call.body
    target: dict[str, str | int]
    if body.agent is not None:
        deleted, target = forget_agent(agent=body.agent), {"agent": body.agent.slug}
    elif body.document is not None:
        deleted, target = forget_document(document=body.document), {"document_id": body.document.pk}
    else:
        assert body.tokenizer is not None
        try:
            deleted, target = forget_tokenizer(tokenizer_spec=body.tokenizer), {"tokenizer": body.tokenizer}
        except TokenizerUnavailable as error:
            raise invalid_request(str(error)) from None
    return JsonResponse({"deleted": deleted, **target})
