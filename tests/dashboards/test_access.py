"""Who may open the dashboards: staff and viewers; others get 403, anonymous the login page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import Demo

PAGES = [
    "/dashboards/",
    "/dashboards/live/",
    "/dashboards/agents/support/",
    "/dashboards/data/figures.json",
    "/dashboards/data/hit-rate-day.csv",
    "/dashboards/?fragment=1",
]


def _client(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_are_sent_to_the_login_page(demo: Demo, path: str) -> None:
    response = _client(None).get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", PAGES)
def test_support_staff_without_the_viewers_group_are_refused(demo: Demo, alice: User, charlie: User, path: str) -> None:
    assert _client(alice).get(path).status_code == 403
    assert _client(charlie).get(path).status_code == 403


@pytest.mark.parametrize("path", PAGES)
def test_viewers_staff_and_admins_may_look(demo: Demo, vera: User, bob: User, root: User, path: str) -> None:
    for user in (vera, bob, root):
        assert _client(user).get(path).status_code == 200, user.username


def test_the_policy_page_is_for_viewers_too(demo: Demo, vera: User, alice: User) -> None:
    path = f"/dashboards/policies/{demo.agents['support'].ttl_policy_id}/"
    assert _client(vera).get(path).status_code == 200
    assert _client(alice).get(path).status_code == 403


def test_a_deactivated_viewer_is_sent_away(demo: Demo, vera: User) -> None:
    client = _client(vera)
    vera.is_active = False
    vera.save()
    assert client.get("/dashboards/").status_code in (302, 403)


def test_pages_do_not_write(demo: Demo, vera: User) -> None:
    assert _client(vera).post("/dashboards/").status_code in (403, 405)
