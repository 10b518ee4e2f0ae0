"""Who may call what: anonymous, bob (staff, no agent group), alice (support group), root (superuser).

Every HTTP endpoint for every persona, with a bearer token and with a browser session (CSRF
token supplied), gives exactly the expected status. The conversation under test is
alice's, on the support agent; root is an admin but not its owner, so he is refused too
(the admin site, not the API, is where admins read other people's conversations).
The websocket's row of the matrix is in test_websocket.py.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from django.utils.crypto import get_random_string

from agents.models import Conversation, Message

PERSONAS = ("anonymous", "bob", "alice", "root")

# endpoint -> expected status for (anonymous, bob, alice, root)
MATRIX = {
    ("GET", "/api/agents/"): (401, 200, 200, 200),
    ("POST", "/api/agents/support/chat"): (401, 403, 200, 200),
    ("POST", "/api/agents/business/chat"): (401, 403, 403, 200),
    ("GET", "/api/conversations/"): (401, 200, 200, 200),
    ("GET", "/api/conversations/{alices}/"): (401, 403, 200, 403),
    ("DELETE", "/api/conversations/{alices}/"): (401, 403, 204, 403),
    ("POST", "/api/agents/support/chat#continue-alices"): (401, 403, 200, 403),
    ("GET", "/v1/models"): (401, 200, 200, 200),
    ("POST", "/v1/chat/completions"): (401, 403, 200, 200),
    ("GET", "/api/schema"): (200, 200, 200, 200),
}

CASES = [
    pytest.param(method, path, persona, auth, expected[i], id=f"{method} {path} as {persona} via {auth}")
    for (method, path), expected in MATRIX.items()
    for i, persona in enumerate(PERSONAS)
    for auth in (("none",) if persona == "anonymous" else ("token", "session"))
]


def _client(persona, auth, users, token_for):
    if auth == "token":
        return Client(headers={"Authorization": f"Bearer {token_for(users[persona])}"}), {}
    client = Client(enforce_csrf_checks=True)
    csrf = get_random_string(32)
    client.cookies[settings.CSRF_COOKIE_NAME] = csrf
    if auth == "session":
        client.force_login(users[persona])
    return client, {"HTTP_X_CSRFTOKEN": csrf}


@pytest.mark.parametrize(("method", "path", "persona", "auth", "expected"), CASES)
def test_matrix(demo, alice, bob, root, token_for, method, path, persona, auth, expected):
    users = {"alice": alice, "bob": bob, "root": root}
    alices = Conversation.objects.create(agent=demo.agents["support"], user=alice, title="alice's")
    path, _, variant = path.partition("#")
    path = path.format(alices=alices.pk)
    client, csrf = _client(persona, auth, users, token_for)
    if path == "/v1/chat/completions":
        body = {"model": "support", "messages": [{"role": "user", "content": "How do I log in?"}]}
    else:
        body = {"message": "How do I log in?"}
        if variant == "continue-alices":
            body["conversation_id"] = alices.pk
    if method == "GET":
        response = client.get(path)
    elif method == "DELETE":
        response = client.delete(path, **csrf)
    else:
        response = client.post(path, body, content_type="application/json", **csrf)

    assert response.status_code == expected, response.content
    if expected >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"]
    if expected == 204:
        assert not Conversation.objects.filter(pk=alices.pk).exists()
    elif method == "DELETE":
        assert Conversation.objects.filter(pk=alices.pk).exists()


@pytest.mark.parametrize(
    ("persona", "slugs"),
    [("bob", []), ("alice", ["documentation", "support"]), ("root", ["business", "documentation", "support"])],
)
def test_each_persona_sees_exactly_their_agents(demo, alice, bob, root, token_for, persona, slugs):
    user = {"alice": alice, "bob": bob, "root": root}[persona]
    client = Client(headers={"Authorization": f"Bearer {token_for(user)}"})
    assert sorted(a["slug"] for a in client.get("/api/agents/").json()["agents"]) == slugs
    assert sorted(m["id"] for m in client.get("/v1/models").json()["data"]) == slugs


def test_each_person_lists_only_their_own_conversations(demo, alice, charlie, token_for):
    mine = Conversation.objects.create(agent=demo.agents["support"], user=alice, title="mine")
    Conversation.objects.create(agent=demo.agents["business"], user=charlie, title="theirs")
    client = Client(headers={"Authorization": f"Bearer {token_for(alice)}"})
    assert [c["id"] for c in client.get("/api/conversations/").json()["conversations"]] == [mine.pk]


def test_session_unsafe_request_without_csrf_token_is_refused_and_stores_nothing(demo, alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/agents/support/chat", {"message": "hi"}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert not Message.objects.exists()


def test_bearer_requests_need_no_csrf_token(demo, alice, token_for):
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {token_for(alice)}"})
    response = client.post("/api/agents/support/chat", {"message": "hi"}, content_type="application/json")
    assert response.status_code == 200


def test_a_bad_bearer_token_is_refused_even_with_a_valid_session(demo, alice):
    client = Client(headers={"Authorization": "Bearer tc_not-a-token"})
    client.force_login(alice)
    response = client.get("/api/agents/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
