"""One error hierarchy for the chat service: each error has a stable code and an HTTP status.

Interfaces render every `ChatError` the same way (`{"error": {"code", "message"}}` or
their protocol's equivalent), so a new error needs no change in any view.
"""

from __future__ import annotations


class ChatError(Exception):
    code: str = "chat_error"
    status: int = 400
    default_message: str = "The chat request failed."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidMessage(ChatError):
    code = "invalid_message"
    status = 400
    default_message = "The message must be non-empty text."


class MessageTooLong(ChatError):
    code = "message_too_long"
    status = 413
    default_message = "The message is too long."


class AgentNotFound(ChatError):
    code = "agent_not_found"
    status = 404
    default_message = "No such agent."


class AgentNotPermitted(ChatError):
    code = "agent_not_permitted"
    status = 403
    default_message = "You are not allowed to use this agent."


class ConversationNotFound(ChatError):
    code = "conversation_not_found"
    status = 404
    default_message = "No such conversation."


class ConversationForbidden(ChatError):
    code = "conversation_forbidden"
    status = 403
    default_message = "This conversation belongs to someone else."


class DocumentNotFound(ChatError):
    code = "document_not_found"
    status = 404
    default_message = "No such document."


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429
    default_message = "Too many chat turns; try again in a minute."

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TurnFailed(ChatError):
    """Raised after the user's message and an error answer row are stored, so nothing is lost.

    Carries where the message was kept. Its `message` is public, fixed per kind: the reason (a
    model-server URL, an upstream error body, a variable's name) is for operators and lives only in
    the logs and the error answer's `Message.error`.
    """

    def __init__(self, message: str | None = None, *, conversation_id: int, message_id: int) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id
        self.message_id = message_id


class ModelUnavailable(TurnFailed):
    """The model server (or its tokenizer) is down, slow, failing, or its breaker is open: retry later."""

    code = "model_unavailable"
    status = 503
    default_message = "The model server was unavailable; your message was kept. Please try again later."


class ModelRejected(TurnFailed):
    """The model server refused the request (a 4xx: prompt too long, bad request) or the agent is
    misconfigured (no API key in its variable): retrying will not help until someone changes something."""

    code = "model_rejected"
    status = 502
    default_message = "The model server could not answer this request; your message was kept."


INTERNAL_ERROR_CODE = "internal_error"
INTERNAL_ERROR_MESSAGE = "The answer failed because of an internal error; your message was kept."
# The process answering stopped mid-turn (killed, crashed): agents/interrupted.py stores these.
INTERRUPTED_ERROR_CODE = "interrupted"
INTERRUPTED_ERROR_MESSAGE = "The answer was interrupted because the server stopped; your message was kept. Ask again."

# What a client is told about an error answer, by its `Message.error_code`.
PUBLIC_ERROR_MESSAGES = {
    ModelUnavailable.code: ModelUnavailable.default_message,
    ModelRejected.code: ModelRejected.default_message,
    INTERNAL_ERROR_CODE: INTERNAL_ERROR_MESSAGE,
    INTERRUPTED_ERROR_CODE: INTERRUPTED_ERROR_MESSAGE,
}


def public_error_code(error_code: str) -> str:
    """The kind a client is told; an answer without a known kind counts as an internal error."""
    return error_code if error_code in PUBLIC_ERROR_MESSAGES else INTERNAL_ERROR_CODE


def public_error_message(error_code: str) -> str:
    """The fixed text a client sees for an error answer, whatever its stored reason says."""
    return PUBLIC_ERROR_MESSAGES[public_error_code(error_code)]
