"""/api/schema: a hand-written OpenAPI file, kept honest by comparing it with the URL map."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import URLPattern

from agents.api import urls as api_urls
from agents.api import views
from agents.openai_api import urls as openai_urls


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
