"""Interface errors and the one JSON error shape: `{"error": {"code", "message"}}`.

`ApiError` covers what the HTTP layer itself refuses (401, 405, 413 body, 429, bad JSON);
the chat service's `ChatError`s are turned into the same shape by `as_api_error`, so a
view never builds an error response by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.http import JsonResponse

from agents.errors import ChatError, RateLimited, TurnFailed

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


def invalid_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def as_api_error(error: ChatError) -> ApiError:
    if isinstance(error, TurnFailed):
        # The fixed public text of its kind: the reason (the model server's URL, its error body) is for
        # operators, logged and kept in the error answer's `Message.error`. The user's message was
        # stored: tell the client where, so it can retry in the same conversation.
        extra = {"conversation_id": error.conversation_id, "message_id": error.message_id}
        return ApiError(error.status, error.code, error.default_message, extra=extra)
    if isinstance(error, RateLimited):
        # In the body too: a websocket frame has no headers, and the chat page says when to retry.
        return ApiError(
            error.status,
            error.code,
            error.message,
            extra={"retry_after": error.retry_after},
            headers={"Retry-After": str(error.retry_after)},
        )
    return ApiError(error.status, error.code, error.message)


def turn_failure(error: BaseException) -> ApiError:
    """What a client is told of a turn that failed away from its request (a stream, a socket, the loop).

    A `ChatError` as `as_api_error` shapes it; anything else is a bug: logged with its traceback,
    answered with a fixed text.
    """
    if isinstance(error, ChatError):
        return as_api_error(error)
    logger.error("turn_failed_unexpectedly", exc_info=error)
    return ApiError(500, "internal_error", "Something went wrong on our side.")


def json_error(error: ApiError) -> JsonResponse:
    response = JsonResponse(
        {"error": {"code": error.code, "message": error.message, **error.extra}}, status=error.status
    )
    for name, value in error.headers.items():
        response[name] = value
    return response
