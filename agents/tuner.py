"""The TTL tuner: recommends each policy's TTL from how soon its chunks are reused, and may apply it.

A TTL is long enough when a chosen share of reuses (90 %) come within it: a longer one buys few
more hits for memory that LRU would otherwise give to other entries, a shorter one turns reuses
into misses. The recommendation is clamped to the policy's bounds; only a policy with
`auto_apply` is changed, at most once per its `tuning_interval_seconds`, and every change is
written to the policy's history with its reason. Runs hourly in Celery beat, and by hand
(`manage.py tune_ttls`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from agents.durations import format_duration
from agents.models import TTLPolicy, TTLPolicyChange, TTLRecommendation
from agents.reuse import chunk_reuse

logger = logging.getLogger(__name__)

WINDOW = timedelta(days=7)
TARGET_SHARE = 0.9
# Fewer reuses than this say too little to move a TTL on.
MIN_REUSES = 20
# Recommendations are rounded up to whole minutes: a TTL of 1,837 s reads as noise.
ROUND_TO_SECONDS = 60


@dataclass(frozen=True)
class TuningResult:
    recommendation: TTLRecommendation | None  # None: too little evidence to recommend
    applied: bool


def recommend(*, policy: TTLPolicy, now: datetime | None = None) -> TTLRecommendation | None:
    """Record what the policy's TTL should be, with its evidence; None when reuses are too few."""
    now = now or timezone.now()
    sample = chunk_reuse(policy=policy, window=WINDOW, now=now)
    if len(sample.intervals) < MIN_REUSES:
        return None
    target = sample.percentile(TARGET_SHARE)
    assert target is not None  # there are reuses
    rounded = math.ceil(target / ROUND_TO_SECONDS) * ROUND_TO_SECONDS
    recommended = min(policy.max_ttl_seconds, max(policy.min_ttl_seconds, rounded))
    return TTLRecommendation.objects.create(
        policy=policy,
        window_seconds=int(WINDOW.total_seconds()),
        answers=sample.answers,
        lookups=sample.hits + sample.misses,
        hits=sample.hits,
        misses=sample.misses,
        reuses=len(sample.intervals),
        reuse_p50_seconds=sample.percentile(0.5),
        reuse_p90_seconds=sample.percentile(0.9),
        reuse_p99_seconds=sample.percentile(0.99),
        reuse_target_seconds=target,
        target_share=TARGET_SHARE,
        current_ttl_seconds=policy.ttl_seconds,
        recommended_ttl_seconds=recommended,
    )


@transaction.atomic
def apply_recommendation(
    *, recommendation: TTLRecommendation, by: str, source: str, now: datetime | None = None
) -> bool:
    """Set the policy's TTL to the recommendation (within today's bounds); False if nothing changed."""
    policy = TTLPolicy.objects.select_for_update().get(pk=recommendation.policy_id)
    new = min(policy.max_ttl_seconds, max(policy.min_ttl_seconds, recommendation.recommended_ttl_seconds))
    if new == policy.ttl_seconds:
        return False
    old = policy.ttl_seconds
    # An update, not save(): it sends no signal, so the history gets this row (with its reason) only.
    TTLPolicy.objects.filter(pk=policy.pk).update(ttl_seconds=new)
    now = now or timezone.now()
    TTLPolicyChange.objects.create(
        policy=policy,
        at=now,
        field="ttl_seconds",
        old=str(old),
        new=str(new),
        source=source,
        by=by,
        reason=(
            f"{format_duration(old)} → {format_duration(new)}: {recommendation.target_share:.0%} of "
            f"{recommendation.reuses} chunk reuses in the last {format_duration(recommendation.window_seconds)} "
            f"came within {format_duration(recommendation.reuse_target_seconds)} "
            f"(bounds {format_duration(policy.min_ttl_seconds)} to {format_duration(policy.max_ttl_seconds)})."
        ),
    )
    TTLRecommendation.objects.filter(pk=recommendation.pk).update(applied_at=now, applied_by=by)
    logger.info("ttl_changed", extra={"policy": policy.name, "old": old, "new": new, "by": by})
    return True


def tune(*, policy: TTLPolicy, now: datetime | None = None) -> TuningResult:
    """Recommend for one policy and, if it auto-applies and its interval has passed, apply."""
    now = now or timezone.now()
    recommendation = recommend(policy=policy, now=now)
    if recommendation is None or not policy.auto_apply:
        return TuningResult(recommendation, applied=False)
    last_change = (
        TTLPolicyChange.objects.filter(policy=policy, field="ttl_seconds", source=TTLPolicyChange.Source.TUNER)
        .values_list("at", flat=True)
        .first()
    )
    if last_change is not None and now - last_change < timedelta(seconds=policy.tuning_interval_seconds):
        return TuningResult(recommendation, applied=False)
    applied = apply_recommendation(
        recommendation=recommendation, by="tuner", source=TTLPolicyChange.Source.TUNER, now=now
    )
    return TuningResult(recommendation, applied=applied)


def tune_all(*, now: datetime | None = None) -> dict[str, TuningResult]:
    return {policy.name: tune(policy=policy, now=now) for policy in TTLPolicy.objects.all()}
