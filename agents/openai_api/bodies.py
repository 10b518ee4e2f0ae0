"""The `/v1/chat/completions` request: what OpenAI clients send, parsed strictly where it matters.

Unknown fields are ignored (clients send many: `user`, `seed`, `tools`, ...) but the fields
we act on are type-checked. The last message must be the user's: it runs the turn; earlier
user and assistant messages become the turn's history. System and developer messages are
ignored: the agent's own system prompt governs it, a client cannot replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from agents.interfaces.bodies import chat_message, expect_object
from agents.interfaces.errors import ApiError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
HISTORY_ROLES = frozenset({"user", "assistant"})
MAX_TOKENS_LIMIT = 1_000_000


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, "invalid_request", message, extra={"param": param})


def _text(content: object, param: str) -> str:
    """A message's text: a string, or OpenAI's list of content parts of which the text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad("Each content part must be an object with a `type`.", f"{param}[{i}]")
            if part["type"] != "text":
                raise _bad(f"Content parts of type {part['type'][:40]!r} are not supported.", f"{param}[{i}]")
            if not isinstance(part.get("text"), str):
                raise _bad("A text part needs a string `text`.", f"{param}[{i}].text")
            texts.append(part["text"])
        return "\n".join(texts)
    raise _bad("`content` must be a string or a list of content parts.", param)


def _optional_int(value: object, param: str, *, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(f"`{param}` must be an integer from {low} to {high}.", param)
    return value


def _optional_float(value: object, param: str, *, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"`{param}` must be a number from {low:g} to {high:g}.", param)
    return float(value)


@dataclass(frozen=True)
class CompletionBody:
    model: str
    message: str
    history: list[tuple[str, str]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float | None

    @classmethod
    def parse(cls, data: object) -> Self:
        fields = expect_object(data)
        model = fields.get("model")
        if not isinstance(model, str) or not model.strip():
            raise _bad("`model` is required: the agent's slug (see GET /v1/models).", "model")
        messages = fields.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("`messages` must be a non-empty list.", "messages")
        turns: list[tuple[str, str]] = []
        for i, item in enumerate(messages):
            role = item.get("role") if isinstance(item, dict) else None
            if not isinstance(role, str) or role not in ROLES:
                raise _bad(f"Each message needs a `role` among {', '.join(sorted(ROLES))}.", f"messages[{i}]")
            turns.append((role, _text(item.get("content"), f"messages[{i}].content")))
        last_role, last_text = turns[-1]
        if last_role != "user":
            raise _bad("The last message must be the user's: it is the question.", "messages")
        stream = fields.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise _bad("`stream` must be a boolean.", "stream")
        options = fields.get("stream_options") or {}
        if not isinstance(options, dict):
            raise _bad("`stream_options` must be an object.", "stream_options")
        n = fields.get("n")
        if n is not None and (type(n) is not int or n != 1):  # not 1.0 or true, which equal 1 in Python
            raise _bad("Only `n` = 1 is supported.", "n")
        # OpenAI's newer name wins; a null one falls back to the older, rather than hiding it.
        max_tokens = fields.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = fields.get("max_tokens")
        return cls(
            model=model,
            message=chat_message(last_text, field=f"messages[{len(turns) - 1}].content"),
            history=[(role, text) for role, text in turns[:-1] if role in HISTORY_ROLES and text.strip()],
            stream=stream,
            include_usage=options.get("include_usage") is True,
            max_tokens=_optional_int(max_tokens, "max_tokens", low=1, high=MAX_TOKENS_LIMIT),
            temperature=_optional_float(fields.get("temperature"), "temperature", low=0, high=2),
        )
