"""api_endpoint: HEAD is answered wherever GET is, with GET's status and headers and no body."""

from __future__ import annotations

import pytest
from django.test import Client

from agents.models import Conversation


@pytest.mark.parametrize("path", ["/api/agents/", "/api/conversations/", "/api/conversations/{own}/", "/v1/models"])
def test_head_is_allowed_wherever_get_is(demo, alice, bearer, path):
    own = Conversation.objects.create(agent=demo.agents["support"], user=alice)
    client = bearer(alice)
    path = path.format(own=own.pk)

    head, get = client.head(path), client.get(path)

    assert head.status_code == get.status_code == 200
    assert head["Content-Type"] == get["Content-Type"] == "application/json"
    assert head.content == b""


def test_head_is_refused_where_get_is(alice, bearer):
    response = bearer(alice).head("/api/agents/support/chat")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_head_still_needs_credentials(db):
    assert Client().head("/api/agents/").status_code == 401
