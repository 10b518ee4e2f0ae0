"""Plain dicts for API responses: one place that decides what a client sees of a row or a turn."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from agents.chat import TurnResult
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
    return {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "error": message.error,
        "created": message.created.isoformat(),
        "citations": message.citations,
    }
