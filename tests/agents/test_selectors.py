"""Who may see what: agents by group, conversations by owner."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User

from agents.chat import run_turn
from agents.errors import AgentNotFound, AgentNotPermitted, ConversationForbidden, ConversationNotFound
from agents.models import Agent
from agents.selectors import (
    agents_for_user,
    conversations_for_user,
    get_agent_for_user,
    get_conversation_for_user,
)
from tests.conftest import Demo


def _slugs(user: object) -> set[str]:
    return set(agents_for_user(user).values_list("slug", flat=True))  # type: ignore[arg-type]


def test_each_persona_sees_exactly_the_agents_of_their_groups(
    demo: Demo, alice: User, bob: User, charlie: User, root: User
) -> None:
    assert _slugs(alice) == {"support", "documentation"}
    assert _slugs(bob) == set()
    assert _slugs(charlie) == {"business"}
    assert _slugs(root) == {"support", "documentation", "business"}
    assert _slugs(AnonymousUser()) == set()


def test_an_inactive_user_sees_no_agent(demo: Demo, alice: User) -> None:
    alice.is_active = False
    assert _slugs(alice) == set()


def test_a_disabled_agent_is_hidden_even_from_a_superuser(demo: Demo, root: User) -> None:
    Agent.objects.filter(slug="business").update(enabled=False)
    assert "business" not in _slugs(root)
    with pytest.raises(AgentNotFound):
        get_agent_for_user(root, "business")


def test_get_agent_tells_unknown_from_forbidden(demo: Demo, alice: User) -> None:
    assert get_agent_for_user(alice, "support") == demo.agents["support"]
    with pytest.raises(AgentNotPermitted):
        get_agent_for_user(alice, "business")
    with pytest.raises(AgentNotFound):
        get_agent_for_user(alice, "no-such-agent")


def test_people_see_only_their_own_conversations(demo: Demo, alice: User, root: User) -> None:
    mine = run_turn(user=alice, agent=demo.agents["support"], message="redis down").conversation
    theirs = run_turn(user=root, agent=demo.agents["support"], message="redis down").conversation

    assert list(conversations_for_user(alice)) == [mine]
    assert get_conversation_for_user(alice, mine.pk) == mine
    with pytest.raises(ConversationForbidden):
        get_conversation_for_user(alice, theirs.pk)
    with pytest.raises(ConversationForbidden):
        get_conversation_for_user(AnonymousUser(), mine.pk)
    assert list(conversations_for_user(AnonymousUser())) == []


@pytest.mark.parametrize("conversation_id", [0, -1, 10**6, 2**63, 10**30])
def test_missing_negative_or_huge_conversation_ids_are_not_found(demo: Demo, alice: User, conversation_id: int) -> None:
    with pytest.raises(ConversationNotFound):
        get_conversation_for_user(alice, conversation_id)
