"""Plain dicts for API responses: one place that decides what a client sees of a row or a turn."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agents.chat import TurnResult
from agents.errors import public_error_code, public_error_message
from agents.models import Agent, Conversation, Message


def plain(value: Any) -> dict[str, Any]:
    """A dataclass or mapping as a plain dict (TurnResult's cache and timings may be either)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot render {type(value).__name__}")


def turn(result: TurnResult) -> dict[str, Any]:
    return {
        "conversation_id": result.conversation.pk,
        "message_id": result.answer_message.pk,
        "answer": result.answer,
        "citations": list(result.citations),
        "cache": plain(result.cache),
        "timings": plain(result.timings),
    }


def agent(agent: Agent) -> dict[str, Any]:
    return {"slug": agent.slug, "name": agent.name, "description": agent.description}


def conversation(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "agent": conversation.agent.slug,
        "title": conversation.title,
        "created": conversation.created.isoformat(),
        "updated": conversation.updated.isoformat(),
    }


def message(message: Message) -> dict[str, Any]:
    failed = message.status == Message.Status.ERROR
    return {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        # Clients see the fixed text of the error's kind; `Message.error` (model-server URLs, upstream
        # error bodies, variable names) is for the admin and the logs.
        "error": public_error_message(message.error_code) if failed else "",
        "error_code": public_error_code(message.error_code) if failed else None,
        "created": message.created.isoformat(),
        "citations": message.citations,
    }
