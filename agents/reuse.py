"""How soon the chunks of a TTL policy's agents are used again, read from the answers' records.

The interval between two successive uses of a chunk is the TTL it would have needed for the
second use to be a hit (exactly so for sliding expiry; for fixed expiry, counted from the write,
it is the optimistic reading). The tuner recommends from these, and the TTL policy's admin page
shows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from agents.models import Message, TTLPolicy

# The most recent answers read: bounded work per policy, however busy the agents are.
MAX_ANSWERS = 20_000


@dataclass(frozen=True)
class ReuseSample:
    intervals: list[float]  # seconds between successive uses of one chunk, sorted
    chunks: int  # distinct chunks used
    answers: int  # answers read
    hits: int
    misses: int

    def percentile(self, share: float) -> float | None:
        """The smallest interval that at least `share` of the reuses came within (nearest rank)."""
        if not self.intervals:
            return None
        rank = max(1, math.ceil(share * len(self.intervals)))
        return self.intervals[rank - 1]

    def share_within(self, seconds: float) -> float | None:
        if not self.intervals:
            return None
        return sum(1 for interval in self.intervals if interval <= seconds) / len(self.intervals)


def chunk_reuse(*, policy: TTLPolicy, window: timedelta, now: datetime | None = None) -> ReuseSample:
    """Reuse intervals of the chunks answered under `policy` in the `window` before `now`."""
    now = now or timezone.now()
    answers = Message.objects.filter(
        role=Message.Role.ASSISTANT,
        status=Message.Status.OK,
        created__gte=now - window,
        created__lt=now,
        conversation__agent__ttl_policy=policy,
    )
    recent = list(answers.order_by("-created").values_list("created", "chunk_outcomes")[:MAX_ANSWERS])
    last_use: dict[object, datetime] = {}
    intervals: list[float] = []
    for created, outcomes in reversed(recent):
        for outcome in outcomes or ():
            chunk = outcome.get("chunk_id") if isinstance(outcome, dict) else None
            if chunk is None:
                continue
            if chunk in last_use:
                intervals.append((created - last_use[chunk]).total_seconds())
            last_use[chunk] = created
    totals = answers.aggregate(hits=Sum("cache_hits"), misses=Sum("cache_misses"))
    return ReuseSample(
        intervals=sorted(intervals),
        chunks=len(last_use),
        answers=len(recent),
        hits=totals["hits"] or 0,
        misses=totals["misses"] or 0,
    )
