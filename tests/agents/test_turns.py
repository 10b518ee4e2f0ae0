"""Admission: who may chat with what, decided once, before the rate budget is charged."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from agents.errors import AgentNotPermitted, ConversationForbidden, RateLimited
from agents.models import Conversation
from agents.turns import confirm_turn, prepare_turn
from tests.conftest import Demo


@pytest.fixture
def one_turn_a_minute(settings: Settings) -> None:
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1


@pytest.mark.parametrize("persona", ["bob", "charlie"])
def test_a_user_outside_the_agents_groups_is_not_admitted(
    demo: Demo, persona: str, request: pytest.FixtureRequest
) -> None:
    user = request.getfixturevalue(persona)
    with pytest.raises(AgentNotPermitted) as raised:
        prepare_turn(user=user, slug="support", conversation_id=None)
    assert (raised.value.code, raised.value.status) == ("agent_not_permitted", 403)


def test_a_conversation_with_another_agent_is_refused_before_the_rate_budget_is_charged(
    demo: Demo, alice: User, one_turn_a_minute: None
) -> None:
    with_documentation = Conversation.objects.create(agent=demo.agents["documentation"], user=alice)
    with pytest.raises(ConversationForbidden):
        prepare_turn(user=alice, slug="support", conversation_id=with_documentation.pk)
    admitted = prepare_turn(user=alice, slug="support", conversation_id=None)  # the one turn of the minute
    assert admitted.agent == demo.agents["support"]
    with pytest.raises(RateLimited):
        prepare_turn(user=alice, slug="support", conversation_id=None)


def test_a_refused_agent_costs_no_rate_budget(demo: Demo, alice: User, one_turn_a_minute: None) -> None:
    with pytest.raises(AgentNotPermitted):
        prepare_turn(user=alice, slug="business", conversation_id=None)
    prepare_turn(user=alice, slug="support", conversation_id=None)


def test_a_waiting_turn_is_admitted_again_without_charging(demo: Demo, alice: User, one_turn_a_minute: None) -> None:
    conversation = Conversation.objects.create(agent=demo.agents["support"], user=alice)
    turn = prepare_turn(user=alice, slug="support", conversation_id=conversation.pk)
    assert confirm_turn(user=alice, turn=turn) == turn  # the minute's one turn was charged once
    alice.groups.clear()
    with pytest.raises(AgentNotPermitted):
        confirm_turn(user=alice, turn=turn)
