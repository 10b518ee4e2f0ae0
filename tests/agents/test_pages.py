"""The landing page and the login page: staff log in and see only the agents their groups allow."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from agents.models import Agent
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


def test_the_home_page_counts_documents_in_one_query_however_many_agents(
    demo: Demo, root: User, client: Client
) -> None:
    client.force_login(root)
    with CaptureQueriesContext(connection) as three_agents:
        page = client.get("/").content.decode()
    for agent in demo.agents.values():
        assert f"{agent.documents.count()} knowledge documents" in page

    support = demo.agents["support"]
    for n in range(3):
        Agent.objects.create(slug=f"extra-{n}", name=f"Extra {n}", ttl_policy=support.ttl_policy)
    with CaptureQueriesContext(connection) as six_agents:
        page = client.get("/").content.decode()

    assert "Extra 2" in page
    assert len(six_agents) == len(three_agents)


def test_an_agent_shared_through_two_groups_counts_its_documents_once(demo: Demo, alice: User, client: Client) -> None:
    support = demo.agents["support"]
    second = Group.objects.create(name="second support group")
    support.allowed_groups.add(second)
    alice.groups.add(second)
    client.force_login(alice)

    page = client.get("/").content.decode()

    assert f"{support.documents.count()} knowledge documents" in page
