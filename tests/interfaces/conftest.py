"""Fixtures for the interface tests: API tokens, clients per persona, a model-backed agent.

`asgi_server` (tests/conftest.py) is the production ASGI app served by uvicorn on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from agents import ratelimit
from agents.tokens import create_api_token


@pytest.fixture(autouse=True)
def _fresh_rate_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis is flushed before every test; a fail-open cool-down from an earlier test must not leak either.
    ratelimit.reset_fail_open()
    # A test that counts turns up to the limit must not see the one-minute window roll over
    # between them: the limiter's clock starts every test 5 s into a window.
    shift = 5 - time.time() % ratelimit.WINDOW_SECONDS
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: time.time() + shift))
    # Nor may a reply slowed by a loaded machine pass for Redis being down (which fails open).
    # A stopped Redis still refuses at once, so the fail-open tests stay fast.
    monkeypatch.setattr(ratelimit, "TIMEOUT_SECONDS", 2.0)
    monkeypatch.setattr(ratelimit, "_limiters", {})


@pytest.fixture
def token_for(db: None) -> Callable[[User], str]:
    def make(user: User) -> str:
        return create_api_token(user=user, name="test")[1]

    return make


@pytest.fixture
def bearer(token_for: Callable[[User], str]) -> Callable[[User], Client]:
    """A client that authenticates with a fresh API token of `user` (no session, no CSRF)."""

    def make(user: User) -> Client:
        return Client(headers={"Authorization": f"Bearer {token_for(user)}"})

    return make


@pytest.fixture
def session_for() -> Callable[[User], Client]:
    """A logged-in browser session that enforces CSRF, like a real browser's would be."""

    def make(user: User) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        return client

    return make


@pytest.fixture
def model_agent(demo: Any, model_server: Any) -> Any:
    """An agent answered by the fake model server (a real HTTP server), usable by alice's group."""
    from django.contrib.auth.models import Group

    from agents.models import Agent

    agent = Agent.objects.create(
        slug="modelled",
        name="Modelled",
        backend_kind=Agent.BackendKind.OPENAI,
        backend_base_url=model_server.base_url,
        backend_model=model_server.model,
        ttl_policy=demo.agents["support"].ttl_policy,
    )
    agent.allowed_groups.add(Group.objects.get_or_create(name="support")[0])
    return agent


def post_json(client: Client, path: str, payload: object, **extra: Any) -> Any:
    import orjson

    return client.post(path, orjson.dumps(payload), content_type="application/json", **extra)


def wait_for_answer(timeout: float = 15) -> Any:
    """The first stored answer, waiting for a turn that runs on in its worker thread."""
    from django.db import OperationalError

    from agents.models import Message

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = Message.objects.filter(role="assistant").first()
        except OperationalError:  # the turn's thread is writing (SQLite in memory, shared cache): try again
            answer = None
        if answer is not None:
            return answer
        time.sleep(0.05)
    raise AssertionError("the answer was never stored")
