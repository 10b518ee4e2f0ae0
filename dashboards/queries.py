"""Reads of the figures: rollup rows of a window, plus the answers not rolled up yet.

Every page, export and admin list reads through `load_window`, so they show the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from agents.models import Agent, TTLPolicyChange
from dashboards.figures import WINDOWS, Window, describe_policy_change, floor_to, hit_rate, window_start
from dashboards.models import Rollup
from dashboards.rollup import _ANSWER_FIELDS, Bucket, aggregate, answers_between, rolled_until, tokenizer_costs

# Beyond this lag the page says that the rollups are behind (is Celery beat running?).
LAG_WARNING = timedelta(minutes=3)


@dataclass
class Scope:
    """Whose figures: every agent, one agent, or the agents of one TTL policy."""

    agent_id: int | None = None
    policy_id: int | None = None

    def rows(self) -> Q:
        if self.agent_id is not None:
            return Q(agent_id=self.agent_id)
        if self.policy_id is not None:
            return Q(ttl_policy_id=self.policy_id)
        return Q()

    def answers(self) -> Q:
        if self.agent_id is not None:
            return Q(conversation__agent_id=self.agent_id)
        if self.policy_id is not None:
            return Q(conversation__agent__ttl_policy_id=self.policy_id)
        return Q()


@dataclass
class Tail:
    """The answers after the last rolled-up minute, read once per request."""

    since: datetime
    rows: list[tuple[Any, ...]]
    costs: dict[int, float]

    def buckets(self, step: timedelta) -> dict[tuple[int, datetime], Bucket]:
        return aggregate(self.rows, step=step, costs=self.costs)


@dataclass
class WindowFigures:
    window: Window
    start: datetime
    now: datetime
    series: dict[int, dict[datetime, Bucket]] = field(default_factory=dict)  # agent id -> bucket start -> figures

    def steps(self) -> list[datetime]:
        moments = []
        moment = self.start
        while moment <= self.now:
            moments.append(moment)
            moment += self.window.step
        return moments

    def agent_total(self, agent_id: int) -> Bucket:
        total = Bucket()
        for bucket in self.series.get(agent_id, {}).values():
            total.add(bucket)
        return total

    def total(self) -> Bucket:
        total = Bucket()
        for agent_id in self.series:
            total.add(self.agent_total(agent_id))
        return total

    def overall_series(self) -> dict[datetime, Bucket]:
        merged: dict[datetime, Bucket] = defaultdict(Bucket)
        for points in self.series.values():
            for moment, bucket in points.items():
                merged[moment].add(bucket)
        return dict(merged)


def read_tail(scope: Scope, *, now: datetime, not_before: datetime) -> Tail:
    until = rolled_until()
    since = max(until, not_before) if until is not None else not_before
    rows = list(answers_between(since).filter(scope.answers()).filter(created__lte=now).values_list(*_ANSWER_FIELDS))
    return Tail(since=since, rows=rows, costs=tokenizer_costs() if rows else {})


def load_window(
    key: str, scope: Scope | None = None, *, now: datetime | None = None, tail: Tail | None = None
) -> WindowFigures:
    """The figures of window `key` ("hour", "day", "week", "month"), bucket by bucket, per agent."""
    scope = scope or Scope()
    now = now or timezone.now()
    window = WINDOWS[key]
    start = window_start(window, now)
    if tail is None:
        tail = read_tail(scope, now=now, not_before=start)
    figures = WindowFigures(window=window, start=start, now=now)
    rows = Rollup.objects.filter(scope.rows(), resolution=window.resolution, start__gte=start, start__lt=tail.since)
    for row in rows.defer("ttl_policy_id").order_by("start"):
        moment = floor_to(row.start, window.step)
        figures.series.setdefault(row.agent_id, {}).setdefault(moment, Bucket()).add(row)
    for (agent_id, moment), bucket in tail.buckets(window.step).items():
        if moment >= start:
            figures.series.setdefault(agent_id, {}).setdefault(moment, Bucket()).add(bucket)
    return figures


def rollup_lag(*, now: datetime | None = None) -> timedelta | None:
    """How far behind the rollups are: None when they never ran."""
    until = rolled_until()
    return None if until is None else (now or timezone.now()) - until


@dataclass(frozen=True)
class AgentSummary:
    agent_id: int
    hits: int
    misses: int
    bypassed: int
    corrupt: int
    lookups: int
    tokens_from_cache: int

    @property
    def hit_rate(self) -> float | None:
        return hit_rate(self.hits, self.misses)


def summary_of(key_id: int, total: Bucket) -> AgentSummary:
    return AgentSummary(
        key_id, total.hits, total.misses, total.bypassed, total.corrupt, total.lookups, total.tokens_from_cache
    )


def agent_summaries(key: str = "day", *, now: datetime | None = None) -> dict[int, AgentSummary]:
    """Each agent's figures over one window, for lists (the admin's agents)."""
    figures = load_window(key, now=now)
    return {agent_id: summary_of(agent_id, figures.agent_total(agent_id)) for agent_id in figures.series}


def agents_by_id() -> dict[int, Agent]:
    return {agent.pk: agent for agent in Agent.objects.select_related("ttl_policy").order_by("slug")}


@dataclass(frozen=True)
class Marker:
    """One change of a TTL policy, as the charts mark it and the policy page lists it."""

    at: datetime
    policy_name: str
    description: str
    source: str
    reason: str = ""

    @property
    def label(self) -> str:
        by = f" by {self.source}" if self.source else ""
        return f"{self.at:%d %b %H:%M} UTC, {self.policy_name}: {self.description}{by}"


def policy_changes(*, policy_id: int | None, since: datetime) -> list[Marker]:
    """TTL policy changes since `since`, oldest first, from the policy's history (agents.policy_history)."""
    history = TTLPolicyChange.objects.filter(at__gte=since).select_related("policy")
    if policy_id is not None:
        history = history.filter(policy_id=policy_id)
    return [
        Marker(c.at, c.policy.name, describe_policy_change(c.field, c.old, c.new), c.get_source_display(), c.reason)
        for c in history.order_by("at")[:200]
    ]
