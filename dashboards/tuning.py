"""What an admin tunes a TTL by: the policy's measured hit rate, and how soon its chunks are reused.

Read by the TTL policy change form (agents/admin.py); the hit rates come from the same
rollups as the dashboards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.utils import timezone

from agents.models import Message, TTLPolicy
from dashboards.figures import WINDOWS, format_count, format_duration, format_percent, hit_rate
from dashboards.queries import Scope, load_window

REUSE_WINDOW = timedelta(days=7)
# Written by the automatic tuner (the Celery issue), which does not exist yet: looked up by name.
RECOMMENDATION_MODEL: str = "agents.TTLRecommendation"
REUSE_MAX_ANSWERS = 20_000  # the most recent answers read for reuse intervals: bounded work per page
# Upper edges (seconds) of the reuse-interval distribution shown on the form.
REUSE_EDGES = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)


@dataclass(frozen=True)
class WindowRate:
    label: str
    hits: int
    misses: int
    bypassed: int
    corrupt: int
    turns: int

    @property
    def text(self) -> str:
        rate = hit_rate(self.hits, self.misses)
        if rate is None:
            return f"— (no lookups {self.label})"
        return (
            f"{format_percent(rate)} of {format_count(self.hits + self.misses)} lookups {self.label} "
            f"({format_count(self.bypassed)} bypassed, {format_count(self.corrupt)} corrupt, "
            f"{format_count(self.turns)} turns)"
        )


def policy_hit_rates(policy: TTLPolicy, *, now: datetime | None = None) -> list[WindowRate]:
    rates = []
    for key in ("day", "week"):
        total = load_window(key, Scope(policy_id=policy.pk), now=now).total()
        rates.append(
            WindowRate(WINDOWS[key].label, total.hits, total.misses, total.bypassed, total.corrupt, total.turns)
        )
    return rates


@dataclass(frozen=True)
class ReuseIntervals:
    reuses: int
    chunks: int
    answers: int
    median_seconds: float | None
    p90_seconds: float | None
    within_ttl: float | None  # share of reuses that came within the policy's TTL
    buckets: list[tuple[str, int]]

    @property
    def summary(self) -> str:
        if not self.reuses:
            return f"No chunk was used twice in the last 7 days ({format_count(self.answers)} answers read)."
        return (
            f"{format_count(self.reuses)} reuses of {format_count(self.chunks)} chunks in the last 7 days: "
            f"median {format_duration(self.median_seconds)}, 90% within {format_duration(self.p90_seconds)}; "
            f"{format_percent(self.within_ttl)} came within the TTL."
        )


def reuse_intervals(policy: TTLPolicy, *, now: datetime | None = None) -> ReuseIntervals:
    """Time between successive uses of the same chunk by the policy's agents (from the answers' records).

    A reuse within the TTL could be a hit (fixed expiry: counted from the write, so this is the
    optimistic reading); one after it is a miss whatever Redis does.
    """
    now = now or timezone.now()
    answers = list(
        Message.objects.filter(
            role=Message.Role.ASSISTANT,
            status=Message.Status.OK,
            created__gte=now - REUSE_WINDOW,
            conversation__agent__ttl_policy=policy,
        )
        .order_by("-created")
        .values_list("created", "chunk_outcomes")[:REUSE_MAX_ANSWERS]
    )
    last_use: dict[Any, datetime] = {}
    intervals: list[float] = []
    for created, outcomes in reversed(answers):
        for outcome in outcomes or ():
            chunk = outcome.get("chunk_id") if isinstance(outcome, dict) else None
            if chunk is None:
                continue
            if chunk in last_use:
                intervals.append((created - last_use[chunk]).total_seconds())
            last_use[chunk] = created
    counts = [0] * (len(REUSE_EDGES) + 1)
    for seconds in intervals:
        counts[next((i for i, edge in enumerate(REUSE_EDGES) if seconds <= edge), len(REUSE_EDGES))] += 1
    labels = [f"≤ {format_duration(edge)}" for edge in REUSE_EDGES] + [f"> {format_duration(REUSE_EDGES[-1])}"]
    intervals.sort()
    within = sum(1 for seconds in intervals if seconds <= policy.ttl_seconds)
    return ReuseIntervals(
        reuses=len(intervals),
        chunks=len(last_use),
        answers=len(answers),
        median_seconds=intervals[len(intervals) // 2] if intervals else None,
        p90_seconds=intervals[min(len(intervals) - 1, int(len(intervals) * 0.9))] if intervals else None,
        within_ttl=within / len(intervals) if intervals else None,
        buckets=[(label, count) for label, count in zip(labels, counts, strict=True) if count],
    )


def latest_recommendation(policy: TTLPolicy) -> str | None:
    """The automatic tuner's latest recommendation for the policy, in words; None when it has made none."""
    try:
        model: Any = apps.get_model(RECOMMENDATION_MODEL)
    except LookupError:  # the tuner is not installed
        return None
    found = model.objects.filter(policy=policy).order_by("-pk").first()
    if found is None:
        return None
    recommended = getattr(found, "recommended_ttl_seconds", None)
    if recommended is None:
        return str(found)
    parts = [f"TTL {format_duration(recommended)} (now {format_duration(policy.ttl_seconds)})"]
    share, target = getattr(found, "target_share", None), getattr(found, "reuse_target_seconds", None)
    if share is not None and target is not None:
        parts.append(f"{format_percent(share)} of reuses came within {format_duration(target)}")
    answers, window = getattr(found, "answers", None), getattr(found, "window_seconds", None)
    if answers is not None and window:
        parts.append(f"read from {format_count(answers)} answers over {format_duration(window)}")
    created = getattr(found, "created", None)
    if created is not None:
        parts.append(f"made {created:%d %b %H:%M} UTC")
    applied = getattr(found, "applied_at", None)
    if applied is not None:
        by = getattr(found, "applied_by", "")
        parts.append(f"applied {applied:%d %b %H:%M} UTC" + (f" by {by}" if by else ""))
    return "; ".join(parts) + "."
