"""Per-minute rollups of the answer records, and the hour and day buckets derived from them.

`run_rollup()` is what the Celery beat task and `manage.py rollup_cache_stats` call. It is
idempotent: a minute is always rebuilt whole from the records, so re-running it rewrites the
same numbers. The answers newer than the last rolled-up minute (the "tail") are aggregated in
memory by the same code when a page is drawn, so a turn shows up at the next poll, not at the
next beat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import Agent, Chunk, Message
from dashboards.figures import (
    CONTEXT_EDGES,
    LOOKUP_EDGES_MS,
    STAGE_EDGES_MS,
    add_counts,
    bucket_index,
    floor_to,
)
from dashboards.models import Rollup, RollupState, TokenizerCost

logger = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
KEEP_MINUTES = timedelta(days=7)
# Each run re-reads this much before the last rolled-up minute: answers stored late (a slow
# turn is created when it ends) and feedback given since land in their minute.
REREAD = timedelta(minutes=5)
BACKFILL = timedelta(days=30)  # a first run reads at most this far back
COST_MAX_AGE = timedelta(days=1)

HISTOGRAMS = {
    "lookup_hist": LOOKUP_EDGES_MS,
    "retrieval_hist": STAGE_EDGES_MS,
    "generation_hist": STAGE_EDGES_MS,
    "total_hist": STAGE_EDGES_MS,
    "context_hist": CONTEXT_EDGES,
}
COUNTS = (
    "turns",
    "errors",
    "hits",
    "misses",
    "bypassed",
    "corrupt",
    "tokens_from_cache",
    "tokens_tokenized",
    "context_tokens",
    "feedback_up",
    "feedback_down",
)


@dataclass
class Bucket:
    """The figures of one agent over one span; rollup rows and in-memory tails alike."""

    turns: int = 0
    errors: int = 0
    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    corrupt: int = 0
    tokens_from_cache: int = 0
    tokens_tokenized: int = 0
    context_tokens: int = 0
    tokenize_ms_saved: float = 0.0
    feedback_up: int = 0
    feedback_down: int = 0
    lookup_hist: list[int] = field(default_factory=list)
    retrieval_hist: list[int] = field(default_factory=list)
    generation_hist: list[int] = field(default_factory=list)
    total_hist: list[int] = field(default_factory=list)
    context_hist: list[int] = field(default_factory=list)

    def add(self, other: Bucket | Rollup) -> Bucket:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.tokenize_ms_saved += other.tokenize_ms_saved
        for name, edges in HISTOGRAMS.items():
            add_counts(getattr(self, name), getattr(other, name) or [], len(edges) + 1)
        return self

    def as_fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def lookups(self) -> int:
        return self.hits + self.misses + self.bypassed + self.corrupt


_ANSWER_FIELDS = (
    "conversation__agent_id",
    "created",
    "status",
    "cache_hits",
    "cache_misses",
    "cache_bypassed",
    "tokens_from_cache",
    "tokens_tokenized",
    "context_tokens",
    "retrieval_ms",
    "lookup_ms",
    "generation_ms",
    "total_ms",
    "feedback",
    "chunk_outcomes",
)


def answers_between(start: datetime, end: datetime | None = None) -> QuerySet[Message]:
    answers = Message.objects.filter(role=Message.Role.ASSISTANT, created__gte=start)
    return answers.filter(created__lt=end) if end is not None else answers


def aggregate(
    answers: Iterable[tuple[Any, ...]], *, step: timedelta, costs: dict[int, float]
) -> dict[tuple[int, datetime], Bucket]:
    """Sum answer rows (values_list of `_ANSWER_FIELDS`) into buckets of `step` per agent.

    `costs` maps an agent id to its tokenizer's measured ms per token (absent: unknown, 0 saved).
    """
    buckets: dict[tuple[int, datetime], Bucket] = {}
    for (
        agent_id,
        created,
        status,
        hits,
        misses,
        bypassed,
        from_cache,
        tokenized,
        context,
        retrieval_ms,
        lookup_ms,
        generation_ms,
        total_ms,
        feedback,
        outcomes,
    ) in answers:
        bucket = buckets.setdefault((agent_id, floor_to(created, step)), Bucket())
        if feedback == 1:
            bucket.feedback_up += 1
        elif feedback == -1:
            bucket.feedback_down += 1
        if status != Message.Status.OK:
            bucket.errors += 1
            continue
        # A corrupt entry is stored among the misses (it was re-tokenized); the chunk outcomes tell them apart.
        corrupt = sum(1 for o in outcomes or () if isinstance(o, dict) and o.get("outcome") == "corrupt")
        bucket.turns += 1
        bucket.hits += hits
        bucket.misses += max(0, misses - corrupt)
        bucket.corrupt += min(corrupt, misses)
        bucket.bypassed += bypassed
        bucket.tokens_from_cache += from_cache
        bucket.tokens_tokenized += tokenized
        bucket.context_tokens += context
        bucket.tokenize_ms_saved += from_cache * costs.get(agent_id, 0.0)
        for name, value, edges in (
            ("lookup_hist", lookup_ms, LOOKUP_EDGES_MS),
            ("retrieval_hist", retrieval_ms, STAGE_EDGES_MS),
            ("generation_hist", generation_ms, STAGE_EDGES_MS),
            ("total_hist", total_ms, STAGE_EDGES_MS),
            ("context_hist", context, CONTEXT_EDGES),
        ):
            counts = add_counts(getattr(bucket, name), (), len(edges) + 1)
            counts[bucket_index(value, edges)] += 1
    return buckets


# --- what a cache hit saves ----------------------------------------------------------------------


def measure_tokenizer_cost(spec: str, *, samples: int = 20) -> TokenizerCost | None:
    """Time the tokenizer on its agents' chunks (best of three) and store ms per token.

    None when the tokenizer cannot be loaded or reached, or has no chunks to time.
    """
    from cachecore.tokenizers import get_tokenizer

    texts = list(
        Chunk.objects.filter(document__agent__tokenizer_spec=spec)
        .order_by("id")
        .values_list("text", flat=True)[:samples]
    )
    if not texts:
        return None
    try:
        tokenizer = get_tokenizer(spec)
        best = float("inf")
        tokens = 0
        for _ in range(3):
            started = time.perf_counter()
            tokens = sum(int(tokenizer.encode(text).size) for text in texts)
            best = min(best, time.perf_counter() - started)
    except Exception as exc:  # a server: tokenizer may be down; no figure rather than a failed rollup
        logger.warning("could not time the tokenizer %s: %s", spec, exc, extra={"event": "tokenizer_cost_failed"})
        return None
    if not tokens:
        return None
    cost, _ = TokenizerCost.objects.update_or_create(
        tokenizer_spec=spec,
        defaults={"ms_per_token": best * 1000 / tokens, "sample_tokens": tokens, "measured_at": timezone.now()},
    )
    return cost


def tokenizer_costs(*, measure: bool = False, now: datetime | None = None) -> dict[int, float]:
    """Each agent's tokenizer cost in ms per token; `measure` (re)times the missing or old ones."""
    now = now or timezone.now()
    specs = dict(Agent.objects.values_list("id", "tokenizer_spec"))
    known = {c.tokenizer_spec: c for c in TokenizerCost.objects.filter(tokenizer_spec__in=set(specs.values()))}
    if measure:
        for spec in set(specs.values()):
            if spec not in known or known[spec].measured_at < now - COST_MAX_AGE:
                measured = measure_tokenizer_cost(spec)
                if measured is not None:
                    known[spec] = measured
    return {agent_id: known[spec].ms_per_token for agent_id, spec in specs.items() if spec in known}


# --- writing the rollups --------------------------------------------------------------------------


@dataclass(frozen=True)
class RollupReport:
    minutes: int  # minute rows written
    answers: int
    rolled_until: datetime
    pruned: int
    seconds: float


def _state() -> RollupState:
    state = RollupState.objects.order_by("pk").first()
    return state or RollupState.objects.create()


def rolled_until() -> datetime | None:
    return RollupState.objects.order_by("pk").values_list("rolled_until", flat=True).first()


def roll_up(start: datetime, end: datetime, *, costs: dict[int, float] | None = None) -> tuple[int, int]:
    """Rebuild every minute row in [start, end) from the records, then their hours and days.

    Returns (minute rows written, answers read). A minute row keeps the tokenizer cost it
    was first written with, so re-running a minute rewrites the same numbers.
    """
    start, end = floor_to(start, MINUTE), floor_to(end, MINUTE)
    if end <= start:
        return 0, 0
    if costs is None:
        costs = tokenizer_costs()
    rows = list(answers_between(start, end).values_list(*_ANSWER_FIELDS).iterator(chunk_size=2000))
    buckets = aggregate(rows, step=MINUTE, costs=costs)
    policies = dict(Agent.objects.values_list("id", "ttl_policy_id"))
    with transaction.atomic():
        existing = {
            (r.agent_id, r.start): r
            for r in Rollup.objects.filter(resolution=Rollup.Resolution.MINUTE, start__gte=start, start__lt=end).only(
                "agent_id", "start", "tokens_from_cache", "tokenize_ms_saved", "ttl_policy_id"
            )
        }
        for key, bucket in buckets.items():
            old = existing.get(key)
            if old is not None and old.tokens_from_cache and bucket.tokens_from_cache:
                # the cost per token this minute was first valued at
                bucket.tokenize_ms_saved = old.tokenize_ms_saved / old.tokens_from_cache * bucket.tokens_from_cache
        Rollup.objects.filter(resolution=Rollup.Resolution.MINUTE, start__gte=start, start__lt=end).delete()
        Rollup.objects.bulk_create(
            Rollup(
                resolution=Rollup.Resolution.MINUTE,
                start=minute,
                agent_id=agent_id,
                ttl_policy_id=(existing[agent_id, minute].ttl_policy_id if (agent_id, minute) in existing else None)
                or policies.get(agent_id),
                **bucket.as_fields(),
            )
            for (agent_id, minute), bucket in buckets.items()
            if agent_id in policies
        )
        _derive(Rollup.Resolution.HOUR, HOUR, floor_to(start, HOUR), floor_to(end - MINUTE, HOUR) + HOUR)
        _derive(Rollup.Resolution.DAY, DAY, floor_to(start, DAY), floor_to(end - MINUTE, DAY) + DAY)
    return len(buckets), len(rows)


def _derive(resolution: str, step: timedelta, start: datetime, end: datetime) -> None:
    """Rebuild the `resolution` rows in [start, end) as sums of the rows one level finer."""
    finer = Rollup.Resolution.MINUTE if resolution == Rollup.Resolution.HOUR else Rollup.Resolution.HOUR
    sums: dict[tuple[int, datetime], tuple[Bucket, int | None]] = {}
    for row in Rollup.objects.filter(resolution=finer, start__gte=start, start__lt=end).order_by("start"):
        bucket, _ = sums.setdefault((row.agent_id, floor_to(row.start, step)), (Bucket(), row.ttl_policy_id))
        bucket.add(row)
        sums[row.agent_id, floor_to(row.start, step)] = (bucket, row.ttl_policy_id)  # the latest policy
    if resolution == Rollup.Resolution.HOUR:
        # Hours whose minutes were pruned (older than 7 days) keep their rows: nothing to rebuild them from.
        oldest = Rollup.objects.filter(resolution=finer).order_by("start").values_list("start", flat=True).first()
        if oldest is not None and floor_to(oldest, step) > start:
            start = floor_to(oldest, step) + (step if oldest != floor_to(oldest, step) else timedelta(0))
    Rollup.objects.filter(resolution=resolution, start__gte=start, start__lt=end).delete()
    Rollup.objects.bulk_create(
        Rollup(resolution=resolution, start=moment, agent_id=agent_id, ttl_policy_id=policy, **bucket.as_fields())
        for (agent_id, moment), (bucket, policy) in sums.items()
        if moment >= start
    )


def _feedback_minutes(since: datetime, before: datetime) -> set[datetime]:
    """Minutes, before the re-read window, of answers rated since the last run."""
    created = (
        Message.objects.filter(feedback_at__gte=since, created__lt=before)
        .values_list("created", flat=True)
        .iterator(chunk_size=2000)
    )
    return {floor_to(moment, MINUTE) for moment in created}


def prune(*, now: datetime) -> int:
    deleted, _ = Rollup.objects.filter(
        resolution=Rollup.Resolution.MINUTE, start__lt=floor_to(now - KEEP_MINUTES, MINUTE)
    ).delete()
    return deleted


def run_rollup(*, now: datetime | None = None) -> RollupReport:
    """Roll up every complete minute since the last run (re-reading `REREAD` before it), prune.

    A first run backfills up to 30 days. Safe to run concurrently with itself: each minute
    is rebuilt whole, in a transaction.
    """
    started = time.perf_counter()
    now = now or timezone.now()
    end = floor_to(now, MINUTE)
    state = _state()
    last_run = state.last_run
    if state.rolled_until is None:
        first = answers_between(end - BACKFILL).order_by("created").values_list("created", flat=True).first()
        start = floor_to(first, MINUTE) if first else end
    else:
        start = min(state.rolled_until, end) - REREAD
    costs = tokenizer_costs(measure=True, now=now)
    minutes = answers = 0
    # A day at a time: a backfill of 30 days never holds every record in memory at once.
    for day_start in _days(start, end):
        written, read = roll_up(day_start, min(day_start + DAY, end), costs=costs)
        minutes += written
        answers += read
    if last_run is not None:
        for minute in sorted(_feedback_minutes(last_run - REREAD, start)):
            written, read = roll_up(minute, minute + MINUTE, costs=costs)
            minutes += written
            answers += read
    pruned = prune(now=now)
    RollupState.objects.filter(pk=state.pk).update(rolled_until=max(end, state.rolled_until or end), last_run=now)
    report = RollupReport(minutes, answers, end, pruned, time.perf_counter() - started)
    logger.info(
        "rolled up %d answers into %d minute rows",
        answers,
        minutes,
        extra={"event": "rollup", "rolled_until": end.isoformat(), "pruned": pruned, "seconds": report.seconds},
    )
    return report


def _days(start: datetime, end: datetime) -> Iterator[datetime]:
    moment = start
    while moment < end:
        yield moment
        moment += DAY
