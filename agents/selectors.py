"""Reads that decide who may see what: every interface asks these, none filters on its own."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Count, QuerySet

from agents.errors import AgentNotFound, AgentNotPermitted, ConversationForbidden, ConversationNotFound
from agents.models import Agent, Conversation

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


def user_may_use_agent(user: AnyUser, agent: Agent) -> bool:
    return agent.enabled and agents_for_user(user).filter(pk=agent.pk).exists()


def get_agent_for_user(user: AnyUser, slug: str) -> Agent:
    """The agent, if enabled; a disabled agent is reported as missing, like an unknown slug."""
    agent = Agent.objects.filter(slug=slug, enabled=True).select_related("ttl_policy").first()
    if agent is None:
        raise AgentNotFound(f"No agent named {slug!r}.")
    if not user_may_use_agent(user, agent):
        raise AgentNotPermitted(f"You are not allowed to use the agent {slug!r}.")
    return agent


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
