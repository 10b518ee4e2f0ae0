"""What a person may do to their own conversations besides chatting: rename, delete, rate answers.

Callers pass rows already fetched through `selectors`, so ownership is settled before these run.
"""

from __future__ import annotations

from django.utils import timezone

from agents.errors import InvalidMessage
from agents.models import Conversation, Message

TITLE_MAX_CHARS = Conversation._meta.get_field("title").max_length or 200
COMMENT_MAX_CHARS = Message._meta.get_field("feedback_comment").max_length or 200
VERDICTS = {"up": 1, "down": -1}


def rename_conversation(*, conversation: Conversation, title: str) -> Conversation:
    """Give the conversation a title of the person's choosing (one line, not empty)."""
    cleaned = " ".join(title.split())
    if not cleaned:
        raise InvalidMessage("A conversation needs a title.")
    if len(cleaned) > TITLE_MAX_CHARS:
        raise InvalidMessage(f"Titles are limited to {TITLE_MAX_CHARS} characters.")
    conversation.title = cleaned
    # `updated` is left alone: renaming is not activity, so the list keeps its order.
    conversation.save(update_fields=["title"])
    return conversation


def delete_conversation(*, conversation: Conversation) -> None:
    """Delete the conversation and its messages (a turn still running finds it gone and stores nothing)."""
    conversation.delete()


def rate_answer(*, answer: Message, verdict: str, comment: str = "") -> Message:
    """Store the asker's thumbs up or down on an answer, replacing an earlier one."""
    if answer.role != Message.Role.ASSISTANT:
        raise InvalidMessage("Only answers can be rated.")
    if verdict not in VERDICTS:
        raise InvalidMessage('The verdict must be "up" or "down".')
    comment = " ".join(comment.split())
    if len(comment) > COMMENT_MAX_CHARS:
        raise InvalidMessage(f"Comments are limited to {COMMENT_MAX_CHARS} characters.")
    answer.feedback = VERDICTS[verdict]
    answer.feedback_comment = comment
    answer.feedback_at = timezone.now()
    answer.save(update_fields=["feedback", "feedback_comment", "feedback_at"])
    return answer
