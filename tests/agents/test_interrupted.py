"""A question whose turn died (its web worker killed) gets an `interrupted` error answer, once.

A killed turn leaves exactly what these tests store: the user's message and no answer.
"""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from agents.chat import run_turn
from agents.errors import INTERRUPTED_ERROR_MESSAGE
from agents.interrupted import MARGIN_SECONDS, mark_interrupted_turns
from agents.models import Agent, Conversation, Message
from tokencache_project.celery import app


def _conversation(user, agent, *roles: str) -> tuple[Conversation, list[Message]]:
    conversation = Conversation.objects.create(agent=agent, user=user, title="t")
    messages = [
        Message.objects.create(conversation=conversation, role=role, content="" if role == "assistant" else f"q{i}")
        for i, role in enumerate(roles)
    ]
    return conversation, messages


def _past_the_timeout(message: Message) -> datetime:
    return message.created + timedelta(seconds=settings.TOKENCACHE_MODEL_TOTAL_TIMEOUT + MARGIN_SECONDS + 1)


def _history(conversation: Conversation) -> list[tuple[str, str, str]]:
    return [(m.role, m.content, m.error_code) for m in conversation.messages.order_by("created", "id")]


def test_it_answers_a_question_left_without_answer_with_an_interrupted_error(demo, alice, bearer_client):
    conversation, (question,) = _conversation(alice, demo.agents["support"], "user")
    marked = mark_interrupted_turns(now=_past_the_timeout(question))

    assert [(m.status, m.error_code, m.conversation_id) for m in marked] == [("error", "interrupted", conversation.pk)]
    assert "stopped" in marked[0].error
    detail = bearer_client(alice).get(f"/api/conversations/{conversation.pk}/").json()
    assert [(m["role"], m["error_code"], m["error"]) for m in detail["messages"]] == [
        ("user", None, ""),
        ("assistant", "interrupted", INTERRUPTED_ERROR_MESSAGE),
    ]


def test_it_is_idempotent(demo, alice):
    conversation, (question,) = _conversation(alice, demo.agents["support"], "user")
    later = _past_the_timeout(question)
    assert len(mark_interrupted_turns(now=later)) == 1
    assert mark_interrupted_turns(now=later) == []
    assert mark_interrupted_turns(now=later + timedelta(days=1)) == []
    assert conversation.messages.count() == 2


def test_it_leaves_answered_and_young_questions_alone(demo, alice):
    agent = demo.agents["support"]
    _conversation(alice, agent, "user", "assistant")
    _conversation(alice, agent, "user", "user", "assistant", "assistant")  # two turns at once: U1 U2 A1 A2
    _, (unanswered,) = _conversation(alice, agent, "user")
    # Younger than the total timeout plus the margin: its turn may still be running.
    assert mark_interrupted_turns(now=unanswered.created + timedelta(seconds=MARGIN_SECONDS)) == []
    assert [m.conversation_id for m in mark_interrupted_turns(now=_past_the_timeout(unanswered))] == [
        unanswered.conversation_id
    ]


def test_after_a_retry_the_killed_question_is_marked_right_after_itself_not_the_retry(demo, alice):
    # U1 was being answered when its worker died; the user asked again (U2) and got A2.
    conversation, (_, _, answer) = _conversation(alice, demo.agents["support"], "user", "user", "assistant")
    marked = mark_interrupted_turns(now=_past_the_timeout(answer))
    assert len(marked) == 1
    assert _history(conversation) == [
        ("user", "q0", ""),
        ("assistant", "", "interrupted"),
        ("user", "q1", ""),
        ("assistant", "", ""),
    ]


def test_two_killed_questions_in_a_row_each_get_an_error(demo, alice):
    conversation, (_, second) = _conversation(alice, demo.agents["support"], "user", "user")
    assert len(mark_interrupted_turns(now=_past_the_timeout(second))) == 2
    assert [role for role, _, _ in _history(conversation)] == ["user", "assistant", "user", "assistant"]


@pytest.mark.django_db(transaction=True)
def test_an_answer_still_streaming_is_never_marked(demo, alice, model_server):
    # Transactional: the turn runs in a thread of its own, on its own database connection.
    agent = Agent.objects.create(
        slug="slow",
        name="Slow",
        system_prompt="Answer from the context.",
        backend_kind=Agent.BackendKind.OPENAI,
        backend_base_url=model_server.base_url,
        backend_model=model_server.model,
        ttl_policy=demo.agents["support"].ttl_policy,
    )
    model_server.knobs.stall_after_chunks, model_server.knobs.hang_seconds = 1, 30  # streaming, slowly
    turn = threading.Thread(target=run_turn, kwargs={"user": alice, "agent": agent, "message": "Hello?"})
    turn.start()
    deadline = time.monotonic() + 15
    while not model_server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    question = Message.objects.get(role="user", conversation__agent=agent)
    assert mark_interrupted_turns() == []
    # Up to the last moment the model may still be answering.
    almost = question.created + timedelta(seconds=settings.TOKENCACHE_MODEL_TOTAL_TIMEOUT + MARGIN_SECONDS - 1)
    assert mark_interrupted_turns(now=almost) == []
    model_server.resume()
    turn.join(timeout=15)
    assert mark_interrupted_turns(now=_past_the_timeout(question)) == []
    assert list(Message.objects.filter(conversation__agent=agent).values_list("role", "status")) == [
        ("user", "ok"),
        ("assistant", "ok"),
    ]


def test_the_start_up_command_and_the_beat_task_run_the_service(demo, alice):
    _, (question,) = _conversation(alice, demo.agents["support"], "user")
    Message.objects.filter(pk=question.pk).update(created=timezone.now() - timedelta(hours=1))
    out = io.StringIO()
    call_command("mark_interrupted_turns", stdout=out)
    assert out.getvalue().strip() == "1 interrupted turn(s) answered with an error."

    _, (other,) = _conversation(alice, demo.agents["support"], "user")
    Message.objects.filter(pk=other.pk).update(created=timezone.now() - timedelta(hours=1))
    entry = settings.CELERY_BEAT_SCHEDULE["mark-interrupted-turns"]
    assert float(entry["schedule"]) <= 600
    assert app.tasks[entry["task"]].apply().get() == 1
    assert Message.objects.filter(error_code="interrupted").count() == 2


@pytest.fixture
def bearer_client(db):
    from agents.tokens import create_api_token

    def make(user) -> Client:
        return Client(headers={"Authorization": f"Bearer {create_api_token(user=user, name='test')[1]}"})

    return make
