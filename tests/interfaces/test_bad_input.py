"""Whatever a client sends, the answer is a 4xx JSON error, never a 500, and nothing half-stored.

Each case is (method, path, raw body, expected status, expected error code). `{other}` is
charlie's conversation, `{own_doc}` alice's own conversation with another agent. After
every case the database holds exactly the rows it held before. Hostile text that *is* a
valid question (FTS operators, HTML, SQL) is not an error: the second table shows it is
answered as plain data and stored whole.
"""

from __future__ import annotations

import orjson
import pytest
from django.conf import settings
from django.test import Client
from django.utils.crypto import get_random_string

from agents.models import ApiToken, Conversation, Message
from tests.interfaces.conftest import post_json

CHAT = "/api/agents/support/chat"
LIMIT = 4000  # TOKENCACHE_MAX_MESSAGE_CHARS default


def j(payload: object) -> bytes:
    return orjson.dumps(payload)


def ask(**fields: object) -> bytes:
    """A chat body with a valid message unless `fields` say otherwise."""
    return j({"message": "hi", **fields})


def oa(**fields: object) -> bytes:
    """An OpenAI chat-completions body, valid unless `fields` say otherwise."""
    return j({"model": "support", "messages": [{"role": "user", "content": "hi"}], **fields})


def said(role: object, content: object) -> list[dict[str, object]]:
    return [{"role": role, "content": content}]


V1 = "/v1/chat/completions"

# fmt: off
BAD = [
    # --- the body is not a JSON object
    ("malformed JSON", "POST", CHAT, b'{"message": ', 400, "invalid_json"),
    ("trailing garbage", "POST", CHAT, b'{"message": "hi"} x', 400, "invalid_json"),
    ("JSON array", "POST", CHAT, j(["hi"]), 400, "invalid_request"),
    ("JSON string", "POST", CHAT, j("hi"), 400, "invalid_request"),
    ("JSON null", "POST", CHAT, b"null", 400, "invalid_request"),
    ("empty body", "POST", CHAT, b"", 400, "invalid_request"),
    ("whitespace body", "POST", CHAT, b"  \n ", 400, "invalid_request"),
    ("invalid UTF-8", "POST", CHAT, b'{"message": "caf\xe9 \xff\xfe"}', 400, "invalid_json"),
    ("lone surrogate escape", "POST", CHAT, b'{"message": "\\ud800"}', 400, "invalid_json"),
    ("NaN literal", "POST", CHAT, b'{"message": NaN}', 400, "invalid_json"),
    ("nested 5000 deep", "POST", CHAT, b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
    ("1 MB body", "POST", CHAT, j({"message": "a" * 1_000_000}), 413, "body_too_large"),
    ("body one byte over the limit", "POST", CHAT, j({"message": "a" * (65536 - 14 + 1)}), 413, "body_too_large"),
    ("unknown field", "POST", CHAT, ask(mesage="typo"), 400, "invalid_request"),
    # --- the message
    ("message missing", "POST", CHAT, j({}), 400, "invalid_message"),
    ("message null", "POST", CHAT, ask(message=None), 400, "invalid_message"),
    ("message number", "POST", CHAT, ask(message=42), 400, "invalid_message"),
    ("message boolean", "POST", CHAT, ask(message=True), 400, "invalid_message"),
    ("message list", "POST", CHAT, ask(message=["hi"]), 400, "invalid_message"),
    ("message object", "POST", CHAT, ask(message={"text": "hi"}), 400, "invalid_message"),
    ("message empty", "POST", CHAT, ask(message=""), 400, "invalid_message"),
    ("message whitespace", "POST", CHAT, ask(message=" \n\t\u00a0\u2003 "), 400, "invalid_message"),
    ("message with NUL", "POST", CHAT, ask(message="hi\u0000there"), 400, "invalid_message"),
    ("message over the limit", "POST", CHAT, ask(message="a" * (LIMIT + 1)), 413, "message_too_long"),
    ("message over the limit in emoji", "POST", CHAT, ask(message="\U0001f600" * (LIMIT + 1)), 413, "message_too_long"),
    # --- the conversation id
    ("conversation id string", "POST", CHAT, ask(conversation_id="1"), 400, "invalid_request"),
    ("conversation id boolean", "POST", CHAT, ask(conversation_id=True), 400, "invalid_request"),
    ("conversation id float", "POST", CHAT, ask(conversation_id=1.5), 400, "invalid_request"),
    ("conversation id FTS text", "POST", CHAT, ask(conversation_id="1 OR 1=1"), 400, "invalid_request"),
    ("conversation id negative", "POST", CHAT, ask(conversation_id=-1), 404, "conversation_not_found"),
    ("conversation id zero", "POST", CHAT, ask(conversation_id=0), 404, "conversation_not_found"),
    ("conversation id 2**63", "POST", CHAT, ask(conversation_id=2**63), 404, "conversation_not_found"),
    ("conversation id 10**30", "POST", CHAT, b'{"message": "hi", "conversation_id": 1' + b"0" * 30 + b"}", 400,
     "invalid_request"),
    ("conversation id unknown", "POST", CHAT, ask(conversation_id=987654), 404, "conversation_not_found"),
    ("someone else's conversation", "POST", CHAT, '{{"message": "hi", "conversation_id": {other}}}', 403,
     "conversation_forbidden"),
    ("own conversation with another agent", "POST", CHAT, '{{"message": "hi", "conversation_id": {own_doc}}}', 403,
     "conversation_forbidden"),
    # --- the agent
    ("unknown agent", "POST", "/api/agents/nope/chat", ask(), 404, "agent_not_found"),
    ("agent not permitted", "POST", "/api/agents/business/chat", ask(), 403, "agent_not_permitted"),
    ("FTS operators as agent", "POST", "/api/agents/NEAR(a%20b)%20OR%20*%22/chat", ask(), 404, "agent_not_found"),
    ("script tag as agent", "POST", "/api/agents/%3Cscript%3Ealert(1)%3Cscript%3E/chat", ask(), 404,
     "agent_not_found"),
    ("closing tag's slash splits the path", "POST", "/api/agents/%3Cb%3E%3C%2Fb%3E/chat", ask(), 404, "not_found"),
    ("very long agent slug", "POST", "/api/agents/" + "a" * 5000 + "/chat", ask(), 404, "agent_not_found"),
    # PostgreSQL refuses NUL in a query parameter (DataError): a slug that is not a slug is never queried
    ("NUL in agent slug", "POST", "/api/agents/a%00b/chat", ask(), 404, "agent_not_found"),
    ("only NUL as agent slug", "POST", "/api/agents/%00/chat", ask(), 404, "agent_not_found"),
    ("non-ASCII agent slug", "POST", "/api/agents/%C3%A9t%C3%A9/chat", ask(), 404, "agent_not_found"),
    # --- conversation URLs
    ("conversation path negative", "GET", "/api/conversations/-1/", b"", 404, "conversation_not_found"),
    ("conversation path huge", "GET", "/api/conversations/" + "9" * 30 + "/", b"", 404, "conversation_not_found"),
    ("conversation path text", "GET", "/api/conversations/abc/", b"", 404, "conversation_not_found"),
    ("conversation path zero", "GET", "/api/conversations/0/", b"", 404, "conversation_not_found"),
    # str.isdigit() accepts these; int() raises on "²" and reads "٣" (Arabic-Indic three) as 3
    ("conversation path superscript two", "GET", "/api/conversations/%C2%B2/", b"", 404, "conversation_not_found"),
    ("conversation path Arabic-Indic digit", "GET", "/api/conversations/%D9%A3/", b"", 404,
     "conversation_not_found"),
    ("conversation path 5000 digits", "GET", "/api/conversations/" + "9" * 5000 + "/", b"", 404,
     "conversation_not_found"),
    ("delete someone else's conversation", "DELETE", "/api/conversations/{other}/", b"", 403,
     "conversation_forbidden"),
    ("list limit zero", "GET", "/api/conversations/?limit=0", b"", 400, "invalid_request"),
    ("list limit text", "GET", "/api/conversations/?limit=ten", b"", 400, "invalid_request"),
    ("list limit huge", "GET", "/api/conversations/?limit=" + "1" * 30, b"", 400, "invalid_request"),
    ("list limit superscript two", "GET", "/api/conversations/?limit=%C2%B2", b"", 400, "invalid_request"),
    ("list limit Arabic-Indic digit", "GET", "/api/conversations/?limit=%D9%A3", b"", 400, "invalid_request"),
    ("list limit 5000 digits", "GET", "/api/conversations/?limit=" + "1" * 5000, b"", 400, "invalid_request"),
    # --- methods and paths
    ("GET on chat", "GET", CHAT, b"", 405, "method_not_allowed"),
    ("PUT on chat", "PUT", CHAT, ask(), 405, "method_not_allowed"),
    ("POST on agent list", "POST", "/api/agents/", j({}), 405, "method_not_allowed"),
    ("PATCH on conversation", "PATCH", "/api/conversations/{other}/", j({}), 405, "method_not_allowed"),
    ("POST on schema", "POST", "/api/schema", j({}), 405, "method_not_allowed"),
    ("unknown API path", "GET", "/api/nothing-here", b"", 404, "not_found"),
    ("bare /api, no slash to append", "POST", "/api", j({}), 404, "not_found"),
    ("more query fields than Django reads", "GET", "/api/conversations/?" + "&".join(["a=1"] * 1001), b"", 400,
     "invalid_request"),
    # --- the OpenAI-compatible API: the same guarantees, in OpenAI's error shape
    ("openai: no messages", "POST", V1, oa(messages=[]), 400, "invalid_request"),
    ("openai: model missing", "POST", V1, j({"messages": said("user", "hi")}), 400, "invalid_request"),
    ("openai: last message not the user's", "POST", V1, oa(messages=said("assistant", "hi")), 400, "invalid_request"),
    ("openai: unknown role", "POST", V1, oa(messages=said("wizard", "hi")), 400, "invalid_request"),
    ("openai: role a list", "POST", V1, oa(messages=said(["user"], "hi")), 400, "invalid_request"),
    ("openai: role an object", "POST", V1, oa(messages=said({"user": 1}, "hi")), 400, "invalid_request"),
    ("openai: image content", "POST", V1, oa(messages=said("user", [{"type": "image_url"}])), 400, "invalid_request"),
    ("openai: blank question", "POST", V1, oa(messages=said("user", "   ")), 400, "invalid_message"),
    ("openai: question over the limit", "POST", V1, oa(messages=said("user", "a" * 4001)), 413, "message_too_long"),
    ("openai: temperature text", "POST", V1, oa(temperature="hot"), 400, "invalid_request"),
    ("openai: temperature 3", "POST", V1, oa(temperature=3), 400, "invalid_request"),
    ("openai: max_tokens 0", "POST", V1, oa(max_tokens=0), 400, "invalid_request"),
    ("openai: stream text", "POST", V1, oa(stream="yes"), 400, "invalid_request"),
    ("openai: n=2", "POST", V1, oa(n=2), 400, "invalid_request"),
    ("openai: n=1.0", "POST", V1, oa(n=1.0), 400, "invalid_request"),
    ("openai: n=true", "POST", V1, oa(n=True), 400, "invalid_request"),
    ("openai: null max_completion_tokens hides no bad max_tokens", "POST", V1,
     oa(max_completion_tokens=None, max_tokens=-5), 400, "invalid_request"),
    ("openai: unknown model", "POST", V1, oa(model="gpt-4o"), 404, "model_not_found"),
    ("openai: NUL in model", "POST", V1, oa(model="a\u0000b"), 404, "model_not_found"),
    ("openai: model with spaces and quotes", "POST", V1, oa(model="support' OR '1'='1"), 404, "model_not_found"),
    ("openai: model not permitted", "POST", V1, oa(model="business"), 403, "agent_not_permitted"),
    ("openai: malformed JSON", "POST", V1, b"{", 400, "invalid_json"),
    ("openai: 1 MB body", "POST", V1, oa(x="a" * 1_000_000), 413, "body_too_large"),
    ("openai: GET completions", "GET", V1, b"", 405, "method_not_allowed"),
    ("openai: unknown path", "GET", "/v1/embeddings", b"", 404, "not_found"),
    ("openai: bare /v1, no slash to append", "PUT", "/v1", j({}), 404, "not_found"),
]
# fmt: on


@pytest.fixture
def world(demo, alice, charlie, token_for):
    other = Conversation.objects.create(agent=demo.agents["business"], user=charlie, title="charlie's")
    own_doc = Conversation.objects.create(agent=demo.agents["documentation"], user=alice, title="docs")
    client = Client(headers={"Authorization": f"Bearer {token_for(alice)}"})
    return client, {"other": other.pk, "own_doc": own_doc.pk}


def _snapshot():
    return (
        list(Conversation.objects.order_by("pk").values_list("pk", "updated")),
        list(Message.objects.order_by("pk").values_list("pk", "status")),
    )


@pytest.mark.parametrize(("name", "method", "path", "body", "status", "code"), BAD, ids=[case[0] for case in BAD])
def test_bad_input_gets_a_4xx_json_error_and_stores_nothing(world, name, method, path, body, status, code):
    client, ids = world
    path = path.format(**ids)
    if isinstance(body, str):
        body = body.format(**ids).encode()
    before = _snapshot()

    response = client.generic(method, path, body, content_type="application/json")

    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if path.startswith("/v1/"):
        assert isinstance(error["type"], str) and "param" in error  # OpenAI's shape
    assert _snapshot() == before


HOSTILE_BUT_VALID = [
    '"redis" NEAR(down broker) OR * -cache AND ^start',
    "redis* OR (down AND NOT up)",
    '<script>alert("x")</script><img src=x onerror=alert(1)>',
    "'; DROP TABLE agents_message; -- what if Redis is down?",
    "¿Qué pasa si Redis está caído? 🚨 ‮ reversed",
    "%s %d {0} ${HOME} `rm -rf /`",
]


@pytest.mark.parametrize("text", HOSTILE_BUT_VALID)
def test_hostile_text_is_answered_as_data_and_stored_whole(demo, alice, token_for, text):
    client = Client(headers={"Authorization": f"Bearer {token_for(alice)}"})
    response = post_json(client, CHAT, {"message": text})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    question, answer = Message.objects.filter(conversation_id=body["conversation_id"]).order_by("pk")
    assert question.content == text.strip()
    assert answer.pk == body["message_id"] and answer.status == "ok"


def test_a_bad_request_costs_no_rate_limit_budget(demo, alice, token_for, settings):
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1
    client = Client(headers={"Authorization": f"Bearer {token_for(alice)}"})
    for _ in range(3):
        assert post_json(client, CHAT, {"message": ""}).status_code == 400
    assert post_json(client, CHAT, {"message": "How do I log in?"}).status_code == 200
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_a_conversation_with_another_agent_costs_no_rate_limit_budget(demo, alice, token_for, settings):
    settings.TOKENCACHE_CHAT_RATE_PER_MINUTE = 1
    client = Client(headers={"Authorization": f"Bearer {token_for(alice)}"})
    with_documentation = Conversation.objects.create(agent=demo.agents["documentation"], user=alice)
    refused = post_json(client, CHAT, {"message": "How do I log in?", "conversation_id": with_documentation.pk})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "conversation_forbidden"
    assert post_json(client, CHAT, {"message": "How do I log in?"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/api/schema", 405),
        ("POST", "/api/nothing-here", 404),
        ("DELETE", "/v1/embeddings", 404),
        ("POST", CHAT, 401),
        ("PUT", "/api/agents/", 405),
    ],
)
def test_json_errors_even_where_django_would_answer_a_csrf_failure_page(db, method, path, status):
    # A client with no cookies at all, as curl is, and Django's CSRF middleware active.
    response = Client(enforce_csrf_checks=True).generic(method, path, b"{}", content_type="application/json")
    assert response.status_code == status
    assert response.json()["error"]["code"]


MULTIPART = "multipart/form-data; boundary=x"
FORM_BODIES = [
    # A browser session may send what a form would: Django's CSRF check reads form bodies itself.
    ("valid multipart", MULTIPART,
     b'--x\r\nContent-Disposition: form-data; name="message"\r\n\r\nredis\r\n--x--\r\n', 400, "invalid_json"),
    ("multipart without a boundary", "multipart/form-data", b"--x--\r\n", 400, "invalid_request"),
    ("multipart with a non-ASCII boundary", "multipart/form-data; boundary=\u00e9", b"--x--\r\n", 400,
     "invalid_request"),
    ("more form fields than Django reads", "application/x-www-form-urlencoded", "&".join(["a=1"] * 1500).encode(),
     400, "invalid_request"),
    ("a form body over the limit", "application/x-www-form-urlencoded", b"a=" + b"1" * 100_000, 413,
     "body_too_large"),
]  # fmt: skip


@pytest.mark.parametrize("path", [CHAT, V1])
@pytest.mark.parametrize(
    ("name", "content_type", "body", "status", "code"), FORM_BODIES, ids=[c[0] for c in FORM_BODIES]
)
def test_a_form_body_from_a_browser_session_is_a_4xx_json_error(
    demo, alice, path, name, content_type, body, status, code
):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies[settings.CSRF_COOKIE_NAME] = csrf = get_random_string(32)
    before = _snapshot()

    response = client.generic("POST", path, body, content_type=content_type, HTTP_X_CSRFTOKEN=csrf)

    assert response.status_code == status, response.content[:300]
    assert response.json()["error"]["code"] == code
    assert _snapshot() == before
