"""/api/schema: a hand-written OpenAPI file, kept honest by comparing it with the URL map."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import URLPattern
from jsonschema import Draft202012Validator

from agents.api import urls as api_urls
from agents.api import views
from agents.openai_api import urls as openai_urls
from tests.interfaces.conftest import post_json


def _routes() -> dict[str, frozenset[str]]:
    routes = {}
    for pattern in [*api_urls.urlpatterns, *openai_urls.urlpatterns]:
        assert isinstance(pattern, URLPattern)
        route = str(pattern.pattern)
        if route.startswith("^"):
            continue  # the catch-all 404s
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        methods = getattr(pattern.callback, "allowed_methods", frozenset({"GET"}))
        routes[path] = frozenset(m.lower() for m in methods)
    return routes


def test_it_is_public_json_openapi_3(db):
    response = Client().get("/api/schema")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["openapi"].startswith("3.")


def test_every_route_and_method_is_described_and_nothing_else():
    schema = Client().get("/api/schema").json()
    described = {path: frozenset(k for k in item if k != "parameters") for path, item in schema["paths"].items()}
    assert described == _routes()


def test_every_reference_resolves():
    schema = Client().get("/api/schema").json()
    text = views.SCHEMA_PATH.read_text()
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = schema
        for part in ref.split("/"):
            node = node[part]


@pytest.fixture
def api(alice, bearer) -> Client:
    return bearer(alice)


def _request_schema(path: str) -> Draft202012Validator:
    # The whole document is the root, so that `#/components/...` references resolve.
    schema = json.loads(views.SCHEMA_PATH.read_text())
    pointer = "/".join(["#", "paths", path.replace("~", "~0").replace("/", "~1"), "post", "requestBody", "content"])
    return Draft202012Validator({**schema, "$ref": pointer + "/application~1json/schema"})


# Examples from a schemathesis run that the schema called valid and the server refused, and their
# neighbours on both sides of each rule of `chat_message` (blank, NUL, length) and of `model`.
MESSAGES = [
    ("How do I log in?", True),
    ("\ufeffHow do I log in?", True),  # a byte-order mark is not whitespace to Python
    ("\u00e9", True),
    ("x" * 4000, True),
    ("", False),
    ("   ", False),
    ("\u001e", False),  # the record separator is whitespace to Python's str.strip()
    ("\u001c\u001d\u001f\u0085\u00a0\u2007\u3000\t\n\r\u000b\u000c", False),
    ("\u0000", False),
    ("hello\u0000world", False),
    ("x" * 4001, False),
]


@pytest.mark.parametrize(("message", "valid"), MESSAGES, ids=[repr(m[:12]) for m, _ in MESSAGES])
def test_the_schema_and_the_server_agree_on_chat_messages(demo, api, message, valid):
    schema = _request_schema("/api/agents/{slug}/chat")
    assert schema.is_valid({"message": message}) is valid
    status = post_json(api, "/api/agents/support/chat", {"message": message}).status_code
    assert status == 200 if valid else status in (400, 413)
    completion = {"model": "support", "messages": [{"role": "user", "content": message}]}
    assert _request_schema("/v1/chat/completions").is_valid(completion)  # the last message's text: not in the schema
    status = post_json(api, "/v1/chat/completions", completion).status_code
    assert status == 200 if valid else status in (400, 413)


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"model": ""}, False),
        ({"model": " \u001e"}, False),
        ({"model": "no-such-agent"}, True),  # well-formed; the server answers 404
        ({"stream": None, "stream_options": None, "max_tokens": None, "temperature": None}, True),
        ({"max_tokens": 1_000_001}, False),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "How do I log in?"}]}]}, True),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, False),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, False),
        ({"messages": []}, False),
    ],
)
def test_the_schema_and_the_server_agree_on_openai_bodies(demo, api, change, valid):
    body = {"model": "support", "messages": [{"role": "user", "content": "How do I log in?"}], **change}
    assert _request_schema("/v1/chat/completions").is_valid(body) is valid
    status = post_json(api, "/v1/chat/completions", body).status_code
    assert status in ((200, 404) if valid else (400,))
