"""Renaming conversations and rating answers: the services behind the chat page's controls."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from agents.chat import run_turn
from agents.conversations import rate_answer, rename_conversation
from agents.errors import InvalidMessage
from tests.conftest import Demo


def test_renaming_keeps_one_line_and_does_not_reorder_the_list(demo: Demo, alice: User) -> None:
    turn = run_turn(user=alice, agent=demo.agents["support"], message="How do I warm the cache?")
    turn.conversation.refresh_from_db()
    updated = turn.conversation.updated

    renamed = rename_conversation(conversation=turn.conversation, title="Warm\n\tup  ")

    renamed.refresh_from_db()
    assert renamed.title == "Warm up"
    assert renamed.updated == updated
    with pytest.raises(InvalidMessage):
        rename_conversation(conversation=turn.conversation, title="x" * 201)


def test_a_second_rating_replaces_the_first(demo: Demo, alice: User) -> None:
    answer = run_turn(user=alice, agent=demo.agents["support"], message="How do I warm the cache?").answer_message

    rate_answer(answer=answer, verdict="up", comment="good")
    rate_answer(answer=answer, verdict="down")

    answer.refresh_from_db()
    assert (answer.feedback, answer.feedback_comment) == (-1, "")
