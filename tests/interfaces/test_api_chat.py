"""POST /api/agents/<slug>/chat and the conversation endpoints, through the real service."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import Client

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
    assert "model server is unavailable" in error["message"] and "message was kept" in error["message"]
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


def test_redis_down_does_not_break_chat_the_limiter_fails_open(demo, api, settings, redis_factory, caplog):
    dead = redis_factory()
    dead.stop()
    settings.REDIS_URL = dead.url(0)
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1
    with caplog.at_level(logging.WARNING, logger="agents.api.ratelimit"):
        started = time.monotonic()
        statuses = [post_json(api, CHAT, {"message": "How do I log in?"}).status_code for _ in range(3)]
        elapsed = time.monotonic() - started
    assert statuses == [200, 200, 200]  # over the limit of 1, but the limiter cannot count: chat goes on
    assert elapsed < 5
    warnings = [r for r in caplog.records if r.getMessage() == "chat_rate_limit_unavailable"]
    assert len(warnings) == 1  # logged once, then skipped for the cool-down, not retried per request
