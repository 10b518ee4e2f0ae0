"""Every figure the admin, the dashboards, the CSV exports and the Grafana titles show, defined once.

- Hit rate = hits / (hits + misses). Bypassed lookups (Redis unavailable or the breaker open)
  and corrupt entries (found, deleted, re-tokenized) are counted beside it, never inside it:
  they say nothing about whether the TTL keeps the right chunks.
- Every figure names its window: "last 24 h" (minute buckets), "since this process started"
  (Prometheus counters of one process), ...
- Latency percentiles are read from bucket counts as Prometheus' histogram_quantile reads
  them (linear within the bucket), so the dashboards and Grafana agree.
- Units: ms with one decimal, sizes in KB/MB, TTLs as "1 h".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agents.durations import format_duration
from cachecore.metrics import CONTEXT_TOKEN_BUCKETS, LATENCY_BUCKETS, TURN_BUCKETS

__all__ = ["format_duration"]  # re-exported: the admin and the dashboards format durations from here

HIT_RATE = "Hit rate"
HIT_RATE_MEANS = "hits / (hits + misses); bypassed and corrupt lookups are shown beside it, not counted in it"
SINCE_PROCESS_START = "since each process started"

# Bucket edges of the rollups' histograms, in ms (and tokens): the Prometheus histograms' edges.
LOOKUP_EDGES_MS = tuple(edge * 1000 for edge in LATENCY_BUCKETS)
STAGE_EDGES_MS = tuple(edge * 1000 for edge in TURN_BUCKETS)
CONTEXT_EDGES = tuple(float(edge) for edge in CONTEXT_TOKEN_BUCKETS)
STAGES = ("retrieval", "lookup", "generation", "total")
OUTCOMES = ("hits", "misses", "bypassed", "corrupt")

STALE_AFTER = timedelta(seconds=45)


@dataclass(frozen=True)
class Window:
    key: str
    label: str  # what every figure over it says: "last 24 h"
    span: timedelta
    resolution: str  # the rollup rows it is drawn from: minute, hour, day
    step: timedelta
    step_label: str  # "by minute"


WINDOWS = {
    "hour": Window("hour", "last hour", timedelta(hours=1), "minute", timedelta(minutes=1), "by minute"),
    "day": Window("day", "last 24 h", timedelta(days=1), "hour", timedelta(hours=1), "by hour"),
    "week": Window("week", "last 7 days", timedelta(days=7), "hour", timedelta(hours=1), "by hour"),
    "month": Window("month", "last 30 days", timedelta(days=30), "day", timedelta(days=1), "by day"),
}
DEFAULT_WINDOW = "day"
CHART_WINDOWS = ("hour", "day", "month")


def floor_to(moment: datetime, step: timedelta) -> datetime:
    """The start of the bucket of `step` (a minute, an hour or a day, UTC) holding `moment`."""
    if step >= timedelta(days=1):
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if step >= timedelta(hours=1):
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def window_start(window: Window, now: datetime) -> datetime:
    """The first bucket of the window: the current bucket and the ones before it, `span` in all."""
    return floor_to(now, window.step) + window.step - window.span


def hit_rate(hits: int, misses: int) -> float | None:
    lookups = hits + misses
    return hits / lookups if lookups else None


def percentile(counts: Sequence[int], edges: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram: counts per bucket of `edges`, plus one above the last edge.

    Interpolates linearly inside the bucket, as Prometheus' histogram_quantile does; a quantile
    in the bucket above the last edge is reported as the last edge.
    """
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(edges):
                return float(edges[-1])
            low = 0.0 if index == 0 else float(edges[index - 1])
            return low + (float(edges[index]) - low) * (rank - seen) / count
        seen += count
    return float(edges[-1])


def bucket_index(value: float, edges: Sequence[float]) -> int:
    """Which bucket `value` falls in: the first edge >= value, or len(edges) above the last (as `le`)."""
    for index, edge in enumerate(edges):
        if value <= edge:
            return index
    return len(edges)


def add_counts(into: list[int], more: Sequence[int], size: int) -> list[int]:
    if len(into) < size:
        into.extend([0] * (size - len(into)))
    for index, count in enumerate(more[:size]):
        into[index] += int(count)
    return into


# --- human units -------------------------------------------------------------------------------


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms >= 10_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.1f} ms"


def format_percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.0%}"


def format_bytes(size: float | None) -> str:
    if size is None:
        return "—"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def format_count(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{int(value):,}".replace(",", "\u202f")  # a narrow no-break space between thousands


def format_saved(ms: float | None) -> str:
    """Tokenization time saved: ms below a second, seconds or minutes above."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return format_duration(ms / 1000) if ms >= 60_000 else f"{ms / 1000:.1f} s"


BREAKER_STATES = {
    "closed": "Closed",
    "half-open": "Half-open",
    "open": "Open",
}


def breaker_state_label(state: str, *, stale: bool) -> str:
    """The one way a breaker state is named; an old record says so, it is never just "Closed"."""
    name = BREAKER_STATES.get(state, state)
    return f"{name} (stale record)" if stale else name


_POLICY_FIELDS = {
    "ttl_seconds": "TTL",
    "min_ttl_seconds": "minimum TTL",
    "max_ttl_seconds": "maximum TTL",
    "expiry_mode": "expiry mode",
    "auto_apply": "tuner applies",
}


def describe_policy_change(field: str, old: str, new: str) -> str:
    """ "TTL 1 h → 2 h": a recorded TTL policy change in words and human units."""

    def shown(value: str) -> str:
        if field.endswith("_seconds") and value.isdigit():
            return format_duration(int(value))
        if field == "auto_apply":
            return "on" if value == "True" else "off"
        return value

    return f"{_POLICY_FIELDS.get(field, field)} {shown(old)} → {shown(new)}"
