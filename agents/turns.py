"""Admission of a chat turn: which agent, which conversation, and whether the user may ask now.

The JSON API, the OpenAI-compatible API and the websocket consumer all admit a turn with
`prepare_turn`, so who may chat with what, and how often, is decided in one place; the
interfaces only parse, call and render, and `run_turn` trusts what admission returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from agents import selectors
from agents.errors import ConversationForbidden
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
    someone else's), `ConversationForbidden` for a conversation with another agent, or the
    limiter's 429. The rate budget is charged last, after every other check, so a refused
    request costs none of it.
    """
    turn = _admit(user=user, slug=slug, conversation_id=conversation_id)
    check_chat_rate(user.pk)
    return turn


def confirm_turn(*, user: User, turn: TurnRequest) -> TurnRequest:
    """`turn`, admitted earlier, admitted again for `user` as the database has them now.

    For a turn that waited before it ran (the websocket's queue): the user may have lost the
    agent meanwhile, or the agent been disabled. Its rate budget was charged on arrival and is
    not charged again.
    """
    conversation_id = turn.conversation.pk if turn.conversation is not None else None
    return _admit(user=user, slug=turn.agent.slug, conversation_id=conversation_id)


def _admit(*, user: User, slug: str, conversation_id: int | None) -> TurnRequest:
    agent = selectors.get_agent_for_user(user, slug)
    conversation = None
    if conversation_id is not None:
        conversation = selectors.get_conversation_for_user(user, conversation_id)
        if conversation.agent_id != agent.pk:
            raise ConversationForbidden("This conversation belongs to another agent.")
    return TurnRequest(user=user, agent=agent, conversation=conversation)
