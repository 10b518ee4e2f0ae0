"""The chat, document and conversation pages: who may see and change what, and what bad input gets.

Personas: alice (support group: support and documentation agents), charlie (business group),
bob (staff in no group). The browser tests (tests/browser/) cover what the pages do once loaded.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agents.chat import run_turn
from agents.models import Conversation, Message
from tests.conftest import Demo

QUESTION = "What do I do when Redis is down?"
FETCH = {"headers": {"X-Requested-With": "fetch"}}


@pytest.fixture
def alices_turn(demo: Demo, alice: User) -> Any:
    return run_turn(user=alice, agent=demo.agents["support"], message=QUESTION)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_visitors_are_sent_to_log_in(demo: Demo, client: Client) -> None:
    for path in ("/agents/support/", "/tokens/", "/agents/support/documents/1/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")


def test_the_chat_page_shows_the_whole_history_with_sources_and_cache_badge(alice: User, alices_turn: Any) -> None:
    conversation = alices_turn.conversation
    page = logged_in(alice).get(f"/agents/support/c/{conversation.pk}/")

    assert page.status_code == 200
    html = page.content.decode()
    assert QUESTION in html
    assert f'id="m{alices_turn.answer_message.pk}"' in html
    assert 'class="citations"' in html
    assert "chunks from cache" in html
    assert f"<title>{QUESTION} · Support · Tokencache</title>" in html


def test_error_answers_reopen_with_their_public_text_not_their_reason(alice: User, alices_turn: Any) -> None:
    Message.objects.create(
        conversation=alices_turn.conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.ERROR,
        error_code="model_unavailable",
        error="connect to http://10.0.0.9:8000 refused",
    )
    html = logged_in(alice).get(f"/agents/support/c/{alices_turn.conversation.pk}/").content.decode()
    assert "The model server was unavailable; your message was kept." in html
    assert "10.0.0.9" not in html


@pytest.mark.parametrize(
    ("persona", "path", "status"),
    [
        ("charlie", "/agents/support/", 403),
        ("bob", "/agents/support/", 403),
        ("alice", "/agents/nope/", 404),
        ("alice", "/agents/business/", 403),
        ("charlie", "/agents/support/c/{conversation}/", 403),
        ("alice", "/agents/documentation/c/{conversation}/", 404),  # her conversation, another agent
        ("alice", "/agents/support/c/999999/", 404),
        ("charlie", "/agents/support/documents/{document}/", 403),
        ("alice", "/agents/support/documents/999999/", 404),
        ("alice", "/agents/documentation/documents/{document}/", 404),  # a support document
        ("charlie", "/answers/{answer}/", 403),
    ],
)
def test_who_may_open_what(
    request: pytest.FixtureRequest, alices_turn: Any, persona: str, path: str, status: int
) -> None:
    user = request.getfixturevalue(persona)
    document = alices_turn.citations[0]["document_id"]
    address = path.format(
        conversation=alices_turn.conversation.pk, document=document, answer=alices_turn.answer_message.pk
    )

    response = logged_in(user).get(address)

    assert response.status_code == status
    assert b"<h1>" in response.content  # the site's own page, not a bare error
    assert QUESTION.encode() not in response.content


def test_the_document_page_highlights_the_cited_chunk(alice: User, alices_turn: Any) -> None:
    cited = alices_turn.citations[0]
    html = (
        logged_in(alice)
        .get(f"/agents/support/documents/{cited['document_id']}/?chunk={cited['chunk_id']}")
        .content.decode()
    )
    assert f'class="chunk chunk--cited" id="chunk-{cited["chunk_id"]}"' in html
    assert html.count("chunk--cited") == 1


def test_a_conversation_is_renamed_and_deleted_only_by_its_owner(alice: User, charlie: User, alices_turn: Any) -> None:
    conversation = alices_turn.conversation
    base = f"/agents/support/c/{conversation.pk}"

    assert logged_in(charlie).post(f"{base}/rename", {"title": "mine now"}).status_code == 403
    assert logged_in(charlie).post(f"{base}/delete").status_code == 403
    assert logged_in(alice).post(f"{base}/rename", {"title": "   "}).status_code == 400
    conversation.refresh_from_db()
    assert conversation.title == QUESTION

    response = logged_in(alice).post(f"{base}/rename", {"title": "  Redis\n outage  "})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "Redis outage"

    assert logged_in(alice).post(f"{base}/delete").status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_changes_need_post_and_a_csrf_token(alice: User, alices_turn: Any) -> None:
    base = f"/agents/support/c/{alices_turn.conversation.pk}"
    assert logged_in(alice).get(f"{base}/delete").status_code == 405
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    assert browser.post(f"{base}/delete").status_code == 403
    assert Conversation.objects.filter(pk=alices_turn.conversation.pk).exists()


def test_feedback_is_stored_and_bad_feedback_gets_a_json_error_for_the_script(
    alice: User, charlie: User, alices_turn: Any
) -> None:
    answer = alices_turn.answer_message
    url = f"/answers/{answer.pk}/feedback"

    bad = logged_in(alice).post(url, {"verdict": "meh"}, **FETCH)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_message"
    too_long = logged_in(alice).post(url, {"verdict": "up", "comment": "x" * 201}, **FETCH)
    assert too_long.status_code == 400
    assert logged_in(charlie).post(url, {"verdict": "down"}, **FETCH).status_code == 403
    answer.refresh_from_db()
    assert answer.feedback is None

    fragment = logged_in(alice).post(url, {"verdict": "down", "comment": "missed the point"}, **FETCH)

    assert fragment.status_code == 200
    assert 'value="down" aria-pressed="true"' in fragment.content.decode()
    answer.refresh_from_db()
    assert (answer.feedback, answer.feedback_comment) == (-1, "missed the point")
    assert answer.feedback_at is not None


def test_a_question_cannot_be_rated(alice: User, alices_turn: Any) -> None:
    question = alices_turn.user_message
    response = logged_in(alice).post(f"/answers/{question.pk}/feedback", {"verdict": "up"}, **FETCH)
    assert response.status_code == 404


def test_without_debug_a_wrong_address_gets_the_sites_404_page(alice: User, settings: Any) -> None:
    settings.DEBUG = False
    response = logged_in(alice).get("/no/such/page/")
    assert response.status_code == 404
    assert b"Nothing here" in response.content
    assert b"Back to your agents" in response.content
