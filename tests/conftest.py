"""Shared personas. Groups decide which agents a person may use:

- alice: support staff, member of the "support" group (support and documentation agents);
- bob: staff (may open the admin) but in no agent group, so he may use no agent;
- charlie: member of the "business" group (the business-template agent);
- root: a superuser, who may use every agent.

Demo data: every test database starts with what `manage.py seed_demo` creates (seeded
once per session in `django_db_setup`): the agents `support`, `documentation` and
`business` with their TTL policies and knowledge (agents/demo/ and pydoc), the groups
`support` (support + documentation agents, so alice may use them) and `business`
(charlie), and the logins `admin` and `support` (password PASSWORD). Create your own
agents under other slugs. The `demo` fixture hands them over (`demo.agents["support"]`,
`demo.queries`, the labelled queries of agents/demo/queries.json) and re-seeds if a
transactional test flushed the database.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from django.contrib.auth.models import Group, User

from tests.support.fake_model_server import FakeModelServer

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session", autouse=True)
def _no_store_threads() -> None:
    # default_store() starts its background threads (cachecore/store/default.py) in production;
    # tests call what those threads call by hand, on moved clocks.
    from django.conf import settings

    settings.TOKENCACHE_STORE_THREADS = False


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The default PBKDF2 costs about 0.3 s per persona; tests check passwords, not their strength.
    # PBKDF2 stays listed to verify the passwords of the session's demo logins.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


def _user(username: str, *, groups: tuple[str, ...] = (), **flags: bool) -> User:
    user = User.objects.create_user(username=username, email=f"{username}@example.com", password=PASSWORD, **flags)
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    return user


@pytest.fixture
def alice(db: None) -> User:
    return _user("alice", groups=("support",))


@pytest.fixture
def bob(db: None) -> User:
    return _user("bob", is_staff=True)


@pytest.fixture
def charlie(db: None) -> User:
    return _user("charlie", groups=("business",))


@pytest.fixture
def root(db: None) -> User:
    return _user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    """A real OpenAI-compatible (vLLM-like) server on loopback; `.knobs` make it fail, `.requests` record."""
    server = FakeModelServer().start()
    yield server
    server.stop()


def _seed_demo() -> None:
    from django.core.management import call_command

    previous = os.environ.get("TOKENCACHE_DEMO_PASSWORD")
    os.environ["TOKENCACHE_DEMO_PASSWORD"] = PASSWORD
    try:
        call_command("seed_demo", stdout=io.StringIO())
    finally:
        if previous is None:
            del os.environ["TOKENCACHE_DEMO_PASSWORD"]
        else:
            os.environ["TOKENCACHE_DEMO_PASSWORD"] = previous


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> None:
    """The test database, migrated and seeded with the demo once for the whole session."""
    with django_db_blocker.unblock():
        _seed_demo()


@dataclass(frozen=True)
class Demo:
    agents: dict[str, Any]  # slug -> agents.models.Agent
    queries: dict[str, list[dict[str, str]]]  # agent slug -> [{"query", "source"}]


@pytest.fixture
def demo(db: None) -> Demo:
    from agents.management.commands.seed_demo import DEMO_KNOWLEDGE_DIR
    from agents.models import Agent

    if not Agent.objects.filter(slug="documentation", documents__isnull=False).exists():
        _seed_demo()  # a transactional test flushed the session's seed
    queries = json.loads((DEMO_KNOWLEDGE_DIR / "queries.json").read_text(encoding="utf-8"))
    return Demo(agents={agent.slug: agent for agent in Agent.objects.select_related("ttl_policy")}, queries=queries)


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
    """uvicorn serving the production ASGI app (HTTP and websockets) from a thread, on a free loopback port.

    A thread rather than a subprocess, because the test database is SQLite in memory (shared
    cache): a thread sees the same database, so tests arrange rows with the ORM and the server
    answers from them, as pytest-django's own `live_server` does. Tests that use it must be
    transactional (`transactional_db`): the server's threads have their own connections and see
    only committed rows.
    """
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
