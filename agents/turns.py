"""Admission of a chat turn: which agent, which conversation, and whether the user may ask now.

The JSON API, the OpenAI-compatible API and the websocket consumer all admit a turn with
`prepare_turn`, so who may chat with what, and how often, is decided in one place; the
interfaces only parse, call and render.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from agents import selectors
from agents.models import Agent, Conversation
from agents.ratelimit import check_chat_rate


@dataclass(frozen=True)
class TurnRequest:
    """What `run_turn` needs besides the message: settled before anything is stored."""

    user: User
    agent: Agent
    conversation: Conversation | None


def prepare_turn(*, user: User, slug: str, conversation_id: int | None) -> TurnRequest:
    """Admit one turn of `user` with the agent `slug`, in `conversation_id` or a new conversation.

    Raises the selectors' `ChatError`s (agent unknown or not permitted, conversation unknown or
    someone else's) or the limiter's 429. The rate budget is counted last, so a refused request
    costs none of it. A conversation with another agent is refused by `run_turn` (403).
    """
    agent = selectors.get_agent_for_user(user, slug)
    conversation = None
    if conversation_id is not None:
        conversation = selectors.get_conversation_for_user(user, conversation_id)
    check_chat_rate(user.pk)
    return TurnRequest(user=user, agent=agent, conversation=conversation)
