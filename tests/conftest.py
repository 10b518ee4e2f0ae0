"""Shared personas. Groups decide which agents a person may use:

- alice: support staff, member of the "support" group (support and documentation agents);
- bob: staff (may open the admin) but in no agent group, so he may use no agent;
- charlie: member of the "business" group (the business-template agent);
- root: a superuser, who may use every agent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, User

from tests.support.fake_model_server import FakeModelServer

PASSWORD = "correct horse battery staple"


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
