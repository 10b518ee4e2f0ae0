"""What the dashboard pages show: markers for TTL changes, CSV exports, live state, escaped text."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from agents.chat import run_turn
from agents.models import Agent, TTLPolicyChange
from cachecore.models import BreakerProcess
from tests.conftest import Demo

QUESTION = "What should I do when Redis is down?"


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_ttl_edit_is_recorded_and_marked_on_the_policys_hit_rate_charts(demo: Demo, vera: User) -> None:
    policy = demo.agents["support"].ttl_policy
    policy.ttl_seconds = 7200
    policy.save()
    change = TTLPolicyChange.objects.get(policy=policy)
    assert (change.field, change.old, change.new) == ("ttl_seconds", "3600", "7200")

    page = _client(vera).get(f"/dashboards/policies/{policy.pk}/").content.decode()
    assert 'class="marker"' in page and "support: TTL 1 h → 2 h" in page
    agent_page = _client(vera).get("/dashboards/agents/support/").content.decode()
    assert 'class="marker"' in agent_page


def test_each_chart_exports_its_numbers_as_csv(demo: Demo, alice: User, vera: User) -> None:
    for _ in range(2):
        run_turn(user=alice, agent=demo.agents["support"], message=QUESTION)
    response = _client(vera).get("/dashboards/data/outcomes.csv?window=hour&agent=support")
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="tokencache-outcomes-hour.csv"' in response["Content-Disposition"]
    rows = dict(list(csv.reader(io.StringIO(response.content.decode())))[1:])
    assert int(rows["hits"]) > 0 and int(rows["misses"]) > 0

    hourly = list(csv.reader(io.StringIO(_client(vera).get("/dashboards/data/hit-rate-hour.csv").content.decode())))
    assert hourly[0][:6] == ["bucket_start", "hits", "misses", "bypassed", "corrupt", "hit_rate"]
    assert len(hourly) == 61  # a header and 60 minutes
    assert _client(vera).get("/dashboards/data/nonsense.csv").status_code == 404
    assert _client(vera).get("/dashboards/data/outcomes.csv?agent=nobody").status_code == 404


def test_the_live_state_never_shows_an_old_record_as_closed(demo: Demo, vera: User) -> None:
    now = timezone.now()
    BreakerProcess.objects.create(host="web-a", pid=1, role="web", state="closed", last_change=now)
    BreakerProcess.objects.create(
        host="web-b",
        pid=2,
        role="web",
        state="closed",
        last_change=now - timedelta(minutes=3),
        last_seen=now - timedelta(minutes=3),
    )
    page = _client(vera).get("/dashboards/live/").content.decode()
    fresh = page.split("web@web-a:1", 1)[1].split("</tr>", 1)[0]
    old = page.split("web@web-b:2", 1)[1].split("</tr>", 1)[0]
    assert ">Closed<" in fresh
    assert "Closed (stale record)" in old and "3 min ago" in old
    assert "Redis (token cache), asked just now" in page and "Answers" in page


def test_names_from_the_database_are_escaped(demo: Demo, vera: User, root: User) -> None:
    Agent.objects.filter(slug="business").update(name="<script>alert(1)</script>")
    page = _client(vera).get("/dashboards/agents/business/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_the_poll_fragment_is_the_panels_only(demo: Demo, vera: User) -> None:
    fragment = _client(vera).get("/dashboards/?fragment=1")
    assert fragment["Cache-Control"] == "no-store"
    body = fragment.content.decode()
    assert "<html" not in body and "Hit rate over time" in body


def test_an_applied_recommendation_is_marked_once_with_who_and_why(demo: Demo, vera: User) -> None:
    from agents.models import TTLPolicyChange, TTLRecommendation
    from agents.tuner import apply_recommendation

    policy = demo.agents["support"].ttl_policy
    recommendation = TTLRecommendation.objects.create(
        policy=policy, window_seconds=7 * 86400, answers=100, lookups=400, hits=300, misses=100, reuses=250,
        reuse_target_seconds=7200, target_share=0.9, current_ttl_seconds=policy.ttl_seconds,
        recommended_ttl_seconds=7200,
    )  # fmt: skip
    assert apply_recommendation(recommendation=recommendation, by="root", source=TTLPolicyChange.Source.ADMIN)

    page = _client(vera).get(f"/dashboards/policies/{policy.pk}/").content.decode()
    listed = page.split('class="plain changes">', 1)[1].split("</ul>", 1)[0]
    assert listed.count("TTL 1 h → 2 h") == 1 and "by an administrator" in listed
    assert "90% of 250 chunk reuses" in listed
