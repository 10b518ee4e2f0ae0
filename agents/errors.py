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


class ModelUnavailable(ChatError):
    """Raised after the user's message and an error answer row are stored, so nothing is lost."""

    code = "model_unavailable"
    status = 503
    default_message = "The model is unavailable; your message was kept. Please try again later."

    def __init__(self, message: str | None = None, *, conversation_id: int, message_id: int) -> None:
        super().__init__(message)
        self.conversation_id = conversation_id
        self.message_id = message_id
