"""Personas of the dashboards: a viewer (the `viewers` group) besides the shared ones."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.conftest import _user


@pytest.fixture
def vera(db: None) -> User:
    """A viewer: may watch the dashboards, is not staff and uses no agent."""
    return _user("vera", groups=("viewers",))
