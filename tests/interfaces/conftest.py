"""Fixtures for the interface tests: API tokens, clients per persona, a real ASGI server.

`asgi_server` is uvicorn serving `tokencache_project.asgi.application` (HTTP and
websockets, the production entry point) from a thread of the test process on a free
loopback port. A thread rather than a subprocess, because the test database is SQLite
in memory (shared cache): a thread sees the same database, so tests arrange rows with the
ORM and the server answers from them, as pytest-django's own `live_server` does. Tests
that use it must be transactional (`transactional_db`): the server's threads have their
own connections and see only committed rows.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
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


@dataclass(frozen=True)
class AsgiServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def asgi_server() -> Iterator[AsgiServer]:
    from tokencache_project.asgi import application

    port = _free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        ws="websockets-sansio",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield AsgiServer("127.0.0.1", port)
    server.should_exit = True
    thread.join(timeout=10)


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
