"""Lists and dashboards cost the same number of queries whatever the history (issue 12: 97 s).

The admin agent list once ran subqueries per row multiplied by a join on documents; the
time at 100,000 messages is measured in bench/dashboards.py, and this checks that the
number of queries does not grow with agents, documents, messages or rollup rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone

from agents.chat import run_turn
from agents.models import Agent, KnowledgeDocument
from dashboards.models import Rollup
from dashboards.rollup import MINUTE, run_rollup
from tests.conftest import Demo

PAGES = [
    "/admin/agents/agent/",
    "/admin/agents/ttlpolicy/",
    "/admin/agents/message/",
    "/admin/cachecore/breakerprocess/",
    "/dashboards/",
    "/dashboards/?window=month",
    "/dashboards/agents/support/",
    "/dashboards/data/figures.json",
]


def _queries(client: Client, path: str) -> int:
    count = 0

    def counted(execute: Callable[..., Any], *args: Any) -> Any:
        nonlocal count
        count += 1
        return execute(*args)

    with connection.execute_wrapper(counted):
        assert client.get(path).status_code == 200, path
    return count


def _more_history(demo: Demo, alice: User) -> None:
    policy = demo.agents["support"].ttl_policy
    for n in range(4):
        agent = Agent.objects.create(slug=f"extra-{n}", name=f"Extra {n}", ttl_policy=policy)
        KnowledgeDocument.objects.bulk_create(
            KnowledgeDocument(agent=agent, source=f"doc-{d}", title=f"Doc {d}", body="text") for d in range(10)
        )
    for _ in range(3):
        run_turn(user=alice, agent=demo.agents["support"], message="What should I do when Redis is down?")
    run_rollup(now=timezone.now() + 2 * MINUTE)
    now = timezone.now()
    Rollup.objects.bulk_create(
        Rollup(resolution="day", start=(now - timedelta(days=d)).replace(hour=0, minute=0, second=0, microsecond=0),
               agent=agent, ttl_policy=policy, hits=10, misses=5, turns=3)
        for d in range(2, 30)
        for agent in Agent.objects.filter(slug__startswith="extra-")
    )  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_queries_do_not_grow_with_history(demo: Demo, alice: User, root: User, path: str) -> None:
    client = Client()
    client.force_login(root)
    client.get(path)  # first use: sessions, content types
    before = _queries(client, path)
    _more_history(demo, alice)
    after = _queries(client, path)
    assert after <= before + 2, f"{path}: {before} queries, then {after} with more history"
