"""Reads that decide who may see what: every interface asks these, none filters on its own."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.validators import slug_re
from django.db.models import Count, QuerySet

from agents.errors import (
    AgentNotFound,
    AgentNotPermitted,
    ConversationForbidden,
    ConversationNotFound,
    DocumentNotFound,
)
from agents.models import Agent, Conversation, KnowledgeDocument, Message

AnyUser = AbstractBaseUser | AnonymousUser


def agents_for_user(user: AnyUser) -> QuerySet[Agent]:
    """Enabled agents the user may use: all of them for a superuser, else those sharing a group."""
    agents = Agent.objects.filter(enabled=True).select_related("ttl_policy")
    if not user.is_authenticated or not user.is_active:
        return agents.none()
    if getattr(user, "is_superuser", False):
        return agents
    return agents.filter(allowed_groups__user__pk=user.pk).distinct()


def agent_cards_for_user(user: AnyUser) -> QuerySet[Agent]:
    """`agents_for_user`, each with `document_count`, counted in the same query (not one per agent)."""
    # distinct: the group join may list an agent once per group the user shares with it.
    return agents_for_user(user).annotate(document_count=Count("documents", distinct=True))


_SLUG_MAX_LENGTH = Agent._meta.get_field("slug").max_length or 50


def _shown(value: object) -> str:
    # A client's string, echoed back short: a 5000-character path segment is not worth repeating.
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def get_agent_for_user(user: AnyUser, slug: str) -> Agent:
    """The agent, if enabled; a disabled agent is reported as missing, like an unknown slug.

    Anything that is not a slug (Agent.slug is a SlugField) is missing without a query: PostgreSQL
    refuses a NUL in a string parameter (DataError, a 500), and nothing else needs the round trip.
    """
    if not isinstance(slug, str) or len(slug) > _SLUG_MAX_LENGTH or not slug_re.fullmatch(slug):
        raise AgentNotFound(f"No agent named {_shown(slug)}.")
    # One query when the user may use the agent (every turn); the second only tells a refusal apart.
    agent = agents_for_user(user).filter(slug=slug).first()
    if agent is not None:
        return agent
    if Agent.objects.filter(slug=slug, enabled=True).exists():
        raise AgentNotPermitted(f"You are not allowed to use the agent {slug!r}.")
    raise AgentNotFound(f"No agent named {slug!r}.")


def conversations_for_user(user: AnyUser) -> QuerySet[Conversation]:
    if not user.is_authenticated:
        return Conversation.objects.none()
    return Conversation.objects.filter(user_id=user.pk).select_related("agent")


_MAX_ID = 2**63 - 1  # the database's integer range; a larger id can only be "not found"


def get_conversation_for_user(user: AnyUser, conversation_id: int) -> Conversation:
    if not 0 < conversation_id <= _MAX_ID:
        raise ConversationNotFound(f"No conversation {conversation_id}.")
    conversation = Conversation.objects.filter(pk=conversation_id).select_related("agent", "agent__ttl_policy").first()
    if conversation is None:
        raise ConversationNotFound(f"No conversation {conversation_id}.")
    if not user.is_authenticated or conversation.user_id != user.pk:
        raise ConversationForbidden()
    return conversation


def conversation_list_for_user(user: AnyUser, *, agent: Agent | None = None) -> QuerySet[Conversation]:
    """The user's conversations, newest activity first, each with `message_count` (one query)."""
    conversations = conversations_for_user(user)
    if agent is not None:
        conversations = conversations.filter(agent=agent)
    return conversations.annotate(message_count=Count("messages")).order_by("-updated", "-id")


def get_conversation_with_agent(user: AnyUser, agent: Agent, conversation_id: int) -> Conversation:
    """The user's conversation with this agent; one with another agent is missing from this agent's pages."""
    conversation = get_conversation_for_user(user, conversation_id)
    if conversation.agent_id != agent.pk:
        raise ConversationNotFound(f"No conversation {conversation_id} with {agent.slug!r}.")
    return conversation


def get_answer_for_user(user: AnyUser, message_id: int) -> Message:
    """An answer in one of the user's own conversations with an agent they may still use."""
    answer = (
        Message.objects.filter(pk=message_id, role=Message.Role.ASSISTANT)
        .select_related("conversation", "conversation__agent")
        .first()
        if 0 < message_id <= _MAX_ID
        else None
    )
    if answer is None:
        raise ConversationNotFound(f"No answer {message_id}.")
    if not user.is_authenticated or answer.conversation.user_id != user.pk:
        raise ConversationForbidden()
    return answer


def get_document_for_user(user: AnyUser, slug: str, document_id: int) -> KnowledgeDocument:
    """A document of an agent the user may use (the same rule as chatting with it), with its chunks."""
    agent = get_agent_for_user(user, slug)
    document = (
        KnowledgeDocument.objects.filter(pk=document_id, agent=agent).prefetch_related("chunks").first()
        if 0 < document_id <= _MAX_ID
        else None
    )
    if document is None:
        raise DocumentNotFound(f"No document {document_id} in {slug!r}.")
    return document
