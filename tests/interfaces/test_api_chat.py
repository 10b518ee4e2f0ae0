"""POST /api/agents/<slug>/chat and the conversation endpoints, through the real service."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.test import Client

from agents.errors import INTERNAL_ERROR_MESSAGE, ModelRejected, ModelUnavailable
from agents.models import Conversation, Message
from tests.interfaces.conftest import post_json

CHAT = "/api/agents/support/chat"


@pytest.fixture
def api(alice, bearer) -> Client:
    return bearer(alice)


def test_it_answers_with_citations_cache_records_and_timings(demo, api):
    response = post_json(api, CHAT, {"message": "What do I do when Redis is down?"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"conversation_id", "message_id", "answer", "citations", "cache", "timings"}
    assert body["answer"]
    assert body["citations"] and set(body["citations"][0]) == {"document_id", "title", "chunk_id", "excerpt"}
    assert any("Redis is down" in c["title"] for c in body["citations"])
    assert set(body["cache"]) == {"hits", "misses", "bypassed", "tokens_from_cache", "tokens_tokenized", "lookup_ms"}
    assert set(body["timings"]) == {"retrieval_ms", "tokens_ms", "generation_ms", "total_ms"}
    answer = Message.objects.get(pk=body["message_id"])
    assert answer.content == body["answer"] and answer.citations == body["citations"]
    assert answer.conversation_id == body["conversation_id"]


def test_the_second_ask_is_served_from_the_token_cache(demo, api):
    first = post_json(api, CHAT, {"message": "What do I do when Redis is down?"}).json()
    second = post_json(api, CHAT, {"message": "What do I do when Redis is down?"}).json()
    assert first["cache"]["misses"] > 0
    assert second["cache"]["hits"] == first["cache"]["misses"] and second["cache"]["misses"] == 0


def test_it_continues_a_conversation(demo, api):
    first = post_json(api, CHAT, {"message": "How do I log in?"}).json()
    second = post_json(api, CHAT, {"message": "And if I forgot my password?", "conversation_id": None})
    third = post_json(api, CHAT, {"message": "And then?", "conversation_id": first["conversation_id"]})
    assert second.json()["conversation_id"] != first["conversation_id"]
    assert third.status_code == 200 and third.json()["conversation_id"] == first["conversation_id"]
    assert Message.objects.filter(conversation_id=first["conversation_id"]).count() == 4


def test_conversations_list_detail_and_delete(demo, api, alice):
    first = post_json(api, CHAT, {"message": "How do I log in?"}).json()
    listed = api.get("/api/conversations/").json()["conversations"]
    assert [c["id"] for c in listed] == [first["conversation_id"]]
    assert listed[0]["agent"] == "support" and listed[0]["title"] == "How do I log in?"

    detail = api.get(f"/api/conversations/{first['conversation_id']}/").json()
    assert [(m["role"], m["status"]) for m in detail["messages"]] == [("user", "ok"), ("assistant", "ok")]
    assert detail["messages"][1]["id"] == first["message_id"]
    assert detail["messages"][1]["citations"] == first["citations"]

    assert api.delete(f"/api/conversations/{first['conversation_id']}/").status_code == 204
    assert not Conversation.objects.filter(user=alice).exists() and not Message.objects.exists()
    assert api.get(f"/api/conversations/{first['conversation_id']}/").status_code == 404


def test_list_limit(demo, api):
    for n in range(3):
        post_json(api, CHAT, {"message": f"How do I log in, take {n}?"})
    assert len(api.get("/api/conversations/?limit=2").json()["conversations"]) == 2


def test_model_server_down_gives_503_and_keeps_the_users_message(model_agent, model_server, api):
    model_server.stop()
    response = post_json(api, "/api/agents/modelled/chat", {"message": "Is anyone there?"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_unavailable" and error["message"]
    question, answer = Message.objects.filter(conversation_id=error["conversation_id"]).order_by("pk")
    assert (question.role, question.content, question.status) == ("user", "Is anyone there?", "ok")
    assert (answer.pk, answer.status, answer.content) == (error["message_id"], "error", "")
    # The client learns that the model is unavailable; where it lives is for the admin's eyes only.
    assert "model server was unavailable" in error["message"] and "message was kept" in error["message"]
    assert model_server.base_url not in error["message"] and "127.0.0.1" not in error["message"]
    assert model_server.base_url in answer.error


def test_model_server_error_status_gives_503_without_the_servers_error_body(model_agent, model_server, api):
    model_server.knobs.error_status = 500
    model_server.knobs.error_message = "CUDA out of memory on gpu-node-7"
    response = post_json(api, "/api/agents/modelled/chat", {"message": "Is anyone there?"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "model_unavailable"
    assert "gpu-node-7" not in error["message"] and model_server.base_url not in error["message"]


def test_it_answers_from_a_model_server(model_agent, model_server, api):
    response = post_json(api, "/api/agents/modelled/chat", {"message": "Is anyone there?"})
    assert response.status_code == 200
    assert response.json()["answer"].startswith("Answer from fake model")


def test_rate_limit_applies_per_user_with_retry_after(demo, alice, root, bearer, settings):
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 2
    alices, roots = bearer(alice), bearer(root)
    assert [post_json(alices, CHAT, {"message": "How do I log in?"}).status_code for _ in range(2)] == [200, 200]
    limited = post_json(alices, CHAT, {"message": "How do I log in?"})
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 61
    assert Message.objects.filter(conversation__user=alice).count() == 4  # the refused turn stored nothing
    # The same budget covers the OpenAI-compatible API; other users have their own.
    v1 = post_json(alices, "/v1/chat/completions", {"model": "support", "messages": [{"role": "user", "content": "x"}]})
    assert v1.status_code == 429 and v1.json()["error"]["type"] == "rate_limit_error"
    assert post_json(roots, CHAT, {"message": "How do I log in?"}).status_code == 200


def test_redis_down_does_not_break_chat_the_limit_is_kept_per_process(demo, api, settings, redis_factory, caplog):
    dead = redis_factory()
    dead.stop()
    settings.REDIS_URL = dead.url(0)
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 2
    with caplog.at_level(logging.WARNING, logger="agents.ratelimit"):
        started = time.monotonic()
        statuses = [post_json(api, CHAT, {"message": "How do I log in?"}).status_code for _ in range(3)]
        elapsed = time.monotonic() - started
    assert statuses == [200, 200, 429]  # the limiter cannot reach Redis: chat goes on, counted in this process
    assert elapsed < 5
    warnings = [r for r in caplog.records if r.getMessage() == "chat_rate_limit_unavailable"]
    assert len(warnings) == 1  # logged once, then skipped for the cool-down, not retried per request


def _break_by_refusing(model_server, agent, monkeypatch):
    model_server.knobs.error_status = 400
    model_server.knobs.error_message = "prompt is too long: 9000 > 8192 tokens (upstream-secret-detail)"
    return "upstream-secret-detail"


def _break_by_missing_key(model_server, agent, monkeypatch):
    monkeypatch.delenv("TOKENCACHE_MODEL_KEY_SECRET_NAME_XYZ", raising=False)  # named, but not set
    agent.backend_api_key_env = "TOKENCACHE_MODEL_KEY_SECRET_NAME_XYZ"
    agent.save()
    return "TOKENCACHE_MODEL_KEY_SECRET_NAME_XYZ"


def _break_by_stopping(model_server, agent, monkeypatch):
    model_server.stop()
    return "unreachable"


BREAKAGES = [
    pytest.param(_break_by_stopping, 503, ModelUnavailable, id="server down"),
    pytest.param(_break_by_refusing, 502, ModelRejected, id="server refuses the request (4xx)"),
    pytest.param(_break_by_missing_key, 502, ModelRejected, id="API key variable not set"),
]


@pytest.mark.parametrize(("break_it", "status", "error_class"), BREAKAGES)
def test_a_failed_turn_shows_clients_only_the_fixed_text_of_its_kind_everywhere_in_the_api(
    model_agent, model_server, api, monkeypatch, break_it, status, error_class
):
    secret = break_it(model_server, model_agent, monkeypatch)

    response = post_json(api, "/api/agents/modelled/chat", {"message": "Is anyone there?"})
    error = response.json()["error"]
    detail = api.get(f"/api/conversations/{error['conversation_id']}/")

    assert response.status_code == status
    assert (error["code"], error["message"]) == (error_class.code, error_class.default_message)
    failed = detail.json()["messages"][1]
    assert failed["id"] == error["message_id"] and failed["status"] == "error" and failed["content"] == ""
    assert (failed["error"], failed["error_code"]) == (error_class.default_message, error_class.code)
    assert detail.json()["messages"][0]["error_code"] is None and detail.json()["messages"][0]["error"] == ""
    for leaked in (secret, model_server.base_url, "127.0.0.1", "TOKENCACHE_MODEL_KEY"):
        assert leaked not in response.content.decode() and leaked not in detail.content.decode()
    stored = Message.objects.get(pk=error["message_id"])  # the reason stays for the admin and the logs
    assert stored.error_code == error_class.code and secret in stored.error


def test_an_error_answer_stored_without_a_kind_shows_the_internal_error_text(demo, api, alice):
    conversation = Conversation.objects.create(agent=demo.agents["support"], user=alice, title="old")
    Message.objects.create(conversation=conversation, role="user", content="hi")
    Message.objects.create(
        conversation=conversation, role="assistant", status="error", error="psycopg.OperationalError at db-7:5432"
    )

    detail = api.get(f"/api/conversations/{conversation.pk}/")

    failed = detail.json()["messages"][1]
    assert (failed["error"], failed["error_code"]) == (INTERNAL_ERROR_MESSAGE, "internal_error")
    assert "db-7" not in detail.content.decode()


def test_a_model_server_refusal_is_502_model_rejected_and_does_not_open_its_breaker(model_agent, model_server, api):
    model_server.knobs.error_status = 422
    statuses = [post_json(api, "/api/agents/modelled/chat", {"message": f"Try {n}"}).status_code for n in range(6)]
    model_server.knobs.error_status = None
    answered = post_json(api, "/api/agents/modelled/chat", {"message": "And now?"})

    assert statuses == [502] * 6
    assert answered.status_code == 200  # six refusals, more than the breaker's threshold, and it is still closed
    assert len(model_server.requests) == 7
    assert Message.objects.filter(status="error", error_code="model_rejected").count() == 6


@pytest.mark.django_db(transaction=True)
def test_a_conversation_deleted_while_its_answer_is_generated_gives_404_and_stores_nothing(
    model_agent, model_server, alice, bearer
):
    # Transactional: the turn runs in a thread of its own, on its own database connection.
    conversation = Conversation.objects.create(agent=model_agent, user=alice, title="soon gone")
    asker, deleter = bearer(alice), bearer(alice)
    model_server.knobs.hang_seconds = 30  # the model thinks; meanwhile the conversation is deleted
    responses = []
    turn = threading.Thread(
        target=lambda: responses.append(
            post_json(asker, "/api/agents/modelled/chat", {"message": "Hello?", "conversation_id": conversation.pk})
        )
    )
    turn.start()
    deadline = time.monotonic() + 10
    while not model_server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    deleted = deleter.delete(f"/api/conversations/{conversation.pk}/")
    model_server.resume()  # the model answers now, into a conversation that is gone
    turn.join(timeout=15)

    assert deleted.status_code == 204 and len(model_server.requests) == 1
    assert responses[0].status_code == 404
    assert responses[0].json()["error"]["code"] == "conversation_not_found"
    assert not Conversation.objects.exists() and not Message.objects.exists()
