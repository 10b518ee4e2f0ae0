"""Typed request bodies: parsed from JSON once, validated strictly, handed to views.

Each body type has a `parse(data)` classmethod that raises `ApiError` or a `ChatError`;
a view only ever sees a valid instance. The chat-message rules live here once and are
shared by the JSON API, the OpenAI-compatible API and the websocket consumer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, Self

from django.conf import settings

from agents.errors import InvalidMessage, MessageTooLong
from agents.interfaces.errors import invalid_request


class Body(Protocol):
    @classmethod
    def parse(cls, data: object) -> Self: ...


def expect_object(data: object, *, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.")
    if allowed is not None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise invalid_request(f"Unknown field(s): {', '.join(unknown)}.")
    return data


def chat_message(value: object, *, field: str = "message") -> str:
    """A user's chat message: text, not blank, no NUL (PostgreSQL cannot store it), within the limit."""
    if value is None:
        raise InvalidMessage(f"`{field}` is required.")
    if not isinstance(value, str):
        raise InvalidMessage(f"`{field}` must be a string.")
    if not value.strip():
        raise InvalidMessage(f"`{field}` must not be empty or only whitespace.")
    if "\x00" in value:
        raise InvalidMessage(f"`{field}` must not contain NUL characters.")
    limit = settings.TOKENCACHE_MAX_MESSAGE_CHARS
    if len(value) > limit:
        raise MessageTooLong(f"`{field}` has {len(value)} characters; the limit is {limit}.")
    return value


# Past any id or size this API accepts (ids are signed 64-bit): what a longer number reads as.
BEYOND_RANGE = 2**63


def ascii_int(raw: str) -> int | None:
    """`raw` (a URL segment, query value or header) as a non-negative integer, or None if it is not one.

    Only ASCII digits count: `str.isdigit()` also accepts "²", on which `int()` raises (a 500),
    and `int()` itself reads "٣" as 3. Over 19 digits the value is `BEYOND_RANGE`, out of every
    range here, so `int()` never meets its 4300-digit limit (another 500).
    """
    if not raw.isascii() or not raw.isdigit():
        return None
    digits = raw.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else BEYOND_RANGE


def optional_id(value: object, *, field: str) -> int | None:
    # bool is an int in Python; `true` is not an id. Range is the selector's job (404 if out of range).
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"`{field}` must be an integer or null.")
    return value


@dataclass(frozen=True)
class ChatBody:
    message: str
    conversation_id: int | None

    @classmethod
    def parse(cls, data: object) -> Self:
        fields = expect_object(data, allowed=("message", "conversation_id"))
        return cls(
            message=chat_message(fields.get("message")),
            conversation_id=optional_id(fields.get("conversation_id"), field="conversation_id"),
        )
