"""The landing page and the login page: staff log in and see only the agents their groups allow."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client

from tests.conftest import PASSWORD, Demo


def test_an_anonymous_visitor_is_sent_to_the_login_page(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_the_login_page_renders_a_csrf_protected_form(client: Client) -> None:
    response = client.get("/accounts/login/?next=/")
    assert response.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in response.content
    assert b'name="password"' in response.content


def test_staff_log_in_and_see_only_the_agents_their_groups_allow(demo: Demo, alice: User) -> None:
    browser = Client(enforce_csrf_checks=True)
    login_page = browser.get("/accounts/login/")
    token = login_page.cookies["csrftoken"].value
    response = browser.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD, "next": "/", "csrfmiddlewaretoken": token},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert demo.agents["support"].name in page
    assert demo.agents["documentation"].name in page
    assert demo.agents["business"].name not in page


def test_a_wrong_password_is_refused_with_a_message(client: Client, alice: User) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b"didn't match" in response.content
    assert "_auth_user_id" not in client.session


def test_someone_in_no_group_is_told_how_to_get_access(demo: Demo, bob: User, client: Client) -> None:
    client.force_login(bob)
    page = client.get("/").content.decode()
    assert "No agent is open to your groups yet" in page
    assert all(agent.name not in page for agent in demo.agents.values())
