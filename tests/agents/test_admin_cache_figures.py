"""The admin's cache figures: the dashboards' numbers, over named windows, in human units."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from agents.chat import run_turn
from agents.models import Message
from cachecore.models import BreakerProcess
from dashboards.rollup import MINUTE, run_rollup
from tests.conftest import Demo

QUESTION = "What should I do when Redis is down?"


def _cell(page: str, field: str, row_marker: str) -> str:
    row = page.split(row_marker, 1)[1].split("</tr>", 1)[0]
    return row.split(f'class="field-{field}">', 1)[1].split("</td>", 1)[0]


@pytest.fixture
def admin(root: User) -> Client:
    client = Client()
    client.force_login(root)
    return client


def _two_turns(demo: Demo, alice: User) -> tuple[int, int]:
    support = demo.agents["support"]
    first = run_turn(user=alice, agent=support, message=QUESTION)  # every chunk a miss
    second = run_turn(user=alice, agent=support, message=QUESTION)  # the same chunks, now hits
    hits = first.cache["hits"] + second.cache["hits"]
    lookups = hits + first.cache["misses"] + second.cache["misses"]
    assert hits > 0 and lookups > hits
    return hits, lookups


@pytest.mark.parametrize("rolled_up", [False, True])
def test_agents_and_policies_show_the_dashboards_24_h_figures(
    demo: Demo, alice: User, admin: Client, rolled_up: bool
) -> None:
    hits, lookups = _two_turns(demo, alice)
    if rolled_up:
        run_rollup(now=timezone.now() + 2 * MINUTE)
    agents = admin.get("/admin/agents/agent/").content.decode()
    policies = admin.get("/admin/agents/ttlpolicy/").content.decode()
    dashboard = admin.get("/dashboards/data/figures.json").json()["charts"]["agents"]["rows"]

    assert _cell(agents, "hit_rate", ">support</a>") == f"{hits / lookups:.0%}"
    assert _cell(agents, "lookups", ">support</a>") == str(lookups)
    assert _cell(policies, "hit_rate", ">support</a>") == f"{hits / lookups:.0%}"
    assert _cell(policies, "hit_rate_week", ">support</a>") == f"{hits / lookups:.0%}"
    assert [row[:4] for row in dashboard] == [["support", round(hits / lookups, 4), hits, lookups - hits]]
    assert "Hit rate (24 h)" in agents and "Hit rate (7 days)" in policies and "over the last 24 h" in agents


def test_the_agent_list_sorts_by_hit_rate(demo: Demo, alice: User, admin: Client) -> None:
    _two_turns(demo, alice)
    run_turn(user=alice, agent=demo.agents["documentation"], message="how does the with statement work")
    run_rollup(now=timezone.now() + 2 * MINUTE)
    page = admin.get("/admin/agents/agent/?o=-4").content.decode()
    assert page.index(">support</a>") < page.index(">documentation</a>") < page.index(">business</a>")


def test_answers_older_than_the_window_are_left_out(demo: Demo, alice: User, admin: Client) -> None:
    run_turn(user=alice, agent=demo.agents["documentation"], message="how does the with statement work")
    Message.objects.filter(conversation__agent=demo.agents["documentation"]).update(
        created=timezone.now() - timedelta(days=8)
    )
    page = admin.get("/admin/agents/agent/?q=documentation").content.decode()
    assert _cell(page, "hit_rate", ">documentation</a>") == "—"


def test_the_ttl_policy_form_shows_what_the_ttl_does_and_explains_auto_apply(
    demo: Demo, alice: User, admin: Client
) -> None:
    _two_turns(demo, alice)
    policy = demo.agents["support"].ttl_policy
    page = admin.get(f"/admin/agents/ttlpolicy/{policy.pk}/change/").content.decode()
    assert "last 24 h" in page and "last 7 days" in page
    assert "reuses of" in page and "came within the TTL" in page
    assert "TTL (seconds)" in page and "Ttl seconds" not in page
    assert "may set the TTL itself, only between the minimum and the maximum" in page
    assert "None yet" in page  # no recommendation


def test_messages_show_feedback_cache_record_and_timings_read_only(demo: Demo, alice: User, admin: Client) -> None:
    answer = run_turn(user=alice, agent=demo.agents["support"], message=QUESTION).answer_message
    Message.objects.filter(pk=answer.pk).update(feedback=-1, feedback_comment="too long", total_ms=58.0953699999327)
    page = admin.get(f"/admin/agents/message/{answer.pk}/change/").content.decode()
    assert "58.1 ms" in page and "58.0953" not in page
    assert "not helpful" in page and "too long" in page
    assert "Cache record" in page and "Timings" in page
    listing = admin.get("/admin/agents/message/").content.decode()
    assert "58.1 ms" in listing
    assert admin.post(f"/admin/agents/message/{answer.pk}/change/", {}).status_code == 403


def test_the_admin_index_warns_while_a_breaker_is_open_or_a_record_is_stale(admin: Client) -> None:
    now = timezone.now()
    record = BreakerProcess.objects.create(host="web-1", pid=1, role="web", state="open", last_change=now)
    page = admin.get("/admin/").content.decode()
    assert 'id="breaker-banner"' in page and "1 open" in page and "/dashboards/live/" in page

    record.state, record.last_change = "closed", timezone.now()
    record.save()
    assert 'id="breaker-banner"' not in admin.get("/admin/").content.decode()

    BreakerProcess.objects.filter(pk=record.pk).update(
        last_change=now - timedelta(minutes=2), last_seen=now - timedelta(minutes=2)
    )
    assert "1 stale record" in admin.get("/admin/").content.decode()
