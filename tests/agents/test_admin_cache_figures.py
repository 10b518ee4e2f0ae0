"""The admin shows each agent's and TTL policy's recent hit rate, from the durable answer records."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from agents.chat import run_turn
from agents.models import Message
from tests.conftest import Demo

QUESTION = "What should I do when Redis is down?"


def test_agents_and_policies_list_their_recent_hit_rate_and_turns(demo: Demo, alice: User, root: User) -> None:
    support = demo.agents["support"]
    first = run_turn(user=alice, agent=support, message=QUESTION)  # every chunk a miss
    second = run_turn(user=alice, agent=support, message=QUESTION)  # the same chunks, now hits
    hits = first.cache["hits"] + second.cache["hits"]
    lookups = hits + first.cache["misses"] + second.cache["misses"]
    assert hits > 0 and lookups > hits
    expected = f"{hits / lookups:.0%} of {lookups}"

    admin = Client()
    admin.force_login(root)
    policies = admin.get("/admin/agents/ttlpolicy/").content.decode()
    agents = admin.get("/admin/agents/agent/").content.decode()

    assert expected in policies
    assert expected in agents
    assert "Hit rate (7 days)" in agents


def test_answers_older_than_the_window_and_failed_answers_are_left_out(demo: Demo, alice: User, root: User) -> None:
    documentation = demo.agents["documentation"]
    run_turn(user=alice, agent=documentation, message="how does the with statement work")
    Message.objects.filter(conversation__agent=documentation).update(created=timezone.now() - timedelta(days=8))

    admin = Client()
    admin.force_login(root)
    row = admin.get("/admin/agents/agent/?q=documentation").content.decode()
    assert "of 0" not in row and "—" in row
