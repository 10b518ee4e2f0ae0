"""What an admin tunes a TTL by: the policy's measured hit rate, and how soon its chunks are reused.

Read by the TTL policy change form (agents/admin.py); the hit rates come from the same
rollups as the dashboards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agents.models import TTLPolicy, TTLRecommendation
from agents.reuse import chunk_reuse
from dashboards.figures import WINDOWS, format_count, format_duration, format_percent, hit_rate
from dashboards.queries import Scope, load_window

REUSE_WINDOW = timedelta(days=7)
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
    """How soon the policy's chunks were used again in the last 7 days (agents.reuse, as the tuner reads it).

    A reuse within the TTL could be a hit (fixed expiry: counted from the write, so this is the
    optimistic reading); one after it is a miss whatever Redis does.
    """
    sample = chunk_reuse(policy=policy, window=REUSE_WINDOW, now=now)
    counts = [0] * (len(REUSE_EDGES) + 1)
    for seconds in sample.intervals:
        counts[next((i for i, edge in enumerate(REUSE_EDGES) if seconds <= edge), len(REUSE_EDGES))] += 1
    labels = [f"≤ {format_duration(edge)}" for edge in REUSE_EDGES] + [f"> {format_duration(REUSE_EDGES[-1])}"]
    return ReuseIntervals(
        reuses=len(sample.intervals),
        chunks=sample.chunks,
        answers=sample.answers,
        median_seconds=sample.percentile(0.5),
        p90_seconds=sample.percentile(0.9),
        within_ttl=sample.share_within(policy.ttl_seconds),
        buckets=[(label, count) for label, count in zip(labels, counts, strict=True) if count],
    )


def latest_recommendation(policy: TTLPolicy) -> TTLRecommendation | None:
    """The tuner's latest recommendation for the policy (agents/tuner.py), with its evidence in words."""
    return policy.recommendations.first()
