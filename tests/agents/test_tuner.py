"""The TTL tuner: from known reuse intervals to the TTL it should recommend, within the policy's bounds.

Synthetic traffic: answers whose records say which chunks they used and when. Time is a
parameter (`now`), so nothing sleeps.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User

from agents.models import Agent, Conversation, Message, TTLPolicy, TTLPolicyChange, TTLRecommendation
from agents.tuner import MIN_REUSES, apply_recommendation, recommend, tune
from tests.conftest import Demo

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def policy(demo: Demo) -> TTLPolicy:
    return TTLPolicy.objects.create(
        name="simulated", ttl_seconds=3600, min_ttl_seconds=300, max_ttl_seconds=86400, auto_apply=False
    )


def traffic(
    policy: TTLPolicy, user: User, reuse_every: dict[int, float], *, uses: int = 5, end: datetime = NOW
) -> None:
    """Answers that use chunk `c` every `reuse_every[c]` seconds, `uses` times, ending before `end`."""
    agent = Agent.objects.create(slug=f"sim-{Agent.objects.count()}", name="Simulated", ttl_policy=policy)
    conversation = Conversation.objects.create(agent=agent, user=user, title="simulated")
    times: list[tuple[datetime, int]] = []
    for chunk, interval in reuse_every.items():
        first = end - timedelta(seconds=interval * uses)
        times.extend((first + timedelta(seconds=interval * n), chunk) for n in range(uses))
    for when, chunk in times:
        answer = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            content="answer",
            chunk_outcomes=[{"chunk_id": chunk, "outcome": "hit"}],
            cache_hits=1,
        )
        Message.objects.filter(pk=answer.pk).update(created=when)


def test_it_recommends_the_ttl_that_would_have_served_nine_reuses_in_ten(policy: TTLPolicy, alice: User) -> None:
    # 27 chunks come back every 20 min, 3 every 5.5 h: 108 of 120 reuses (90 %) are 20 min apart.
    traffic(policy, alice, {chunk: 1200 if chunk < 27 else 20000 for chunk in range(30)})

    recommendation = recommend(policy=policy, now=NOW)

    assert recommendation is not None
    assert recommendation.reuses == 120
    assert recommendation.recommended_ttl_seconds == 1200
    assert recommendation.reuse_p50_seconds == 1200
    assert recommendation.reuse_p99_seconds == 20000
    assert str(recommendation).startswith("1 h → 20 min (120 chunk reuses, 90% within 20 min")


@pytest.mark.parametrize(("low", "high", "expected"), [(3600, 86400, 3600), (60, 600, 600)])
def test_the_recommendation_stays_within_the_policys_bounds(
    policy: TTLPolicy, alice: User, low: int, high: int, expected: int
) -> None:
    TTLPolicy.objects.filter(pk=policy.pk).update(min_ttl_seconds=low, max_ttl_seconds=high, ttl_seconds=low)
    policy.refresh_from_db()
    traffic(policy, alice, dict.fromkeys(range(30), 1200.0))

    recommendation = recommend(policy=policy, now=NOW)

    assert recommendation is not None
    assert recommendation.recommended_ttl_seconds == expected


def test_random_traffic_never_leads_outside_the_bounds(policy: TTLPolicy, alice: User) -> None:
    rng = random.Random(7)
    traffic(policy, alice, {chunk: rng.uniform(1, 200_000) for chunk in range(40)}, uses=3)
    for _ in range(20):
        low = rng.randint(1, 50_000)
        high = rng.randint(low, 200_000)
        TTLPolicy.objects.filter(pk=policy.pk).update(min_ttl_seconds=low, max_ttl_seconds=high, ttl_seconds=low)
        policy.refresh_from_db()
        recommendation = recommend(policy=policy, now=NOW)
        assert recommendation is not None
        assert low <= recommendation.recommended_ttl_seconds <= high


def test_too_few_reuses_give_no_recommendation(policy: TTLPolicy, alice: User) -> None:
    traffic(policy, alice, dict.fromkeys(range(MIN_REUSES // 4 - 1), 600.0))  # 4 reuses each
    assert recommend(policy=policy, now=NOW) is None
    assert not TTLRecommendation.objects.exists()


def test_without_auto_apply_it_only_recommends(policy: TTLPolicy, alice: User) -> None:
    traffic(policy, alice, dict.fromkeys(range(30), 1200.0))

    result = tune(policy=policy, now=NOW)

    assert result.recommendation is not None and not result.applied
    policy.refresh_from_db()
    assert policy.ttl_seconds == 3600


def test_with_auto_apply_it_changes_the_ttl_at_most_once_per_interval_with_a_reason(
    policy: TTLPolicy, alice: User
) -> None:
    TTLPolicy.objects.filter(pk=policy.pk).update(auto_apply=True, tuning_interval_seconds=86400)
    policy.refresh_from_db()
    traffic(policy, alice, dict.fromkeys(range(30), 1200.0))

    assert tune(policy=policy, now=NOW).applied
    policy.refresh_from_db()
    assert policy.ttl_seconds == 1200
    change = TTLPolicyChange.objects.get(policy=policy)
    assert (change.field, change.old, change.new, change.source) == ("ttl_seconds", "3600", "1200", "tuner")
    assert "90% of 120 chunk reuses" in change.reason

    # New traffic reuses chunks every 2 h: the tuner recommends 2 h at once, but waits a day to apply it.
    traffic(policy, alice, dict.fromkeys(range(100, 130), 7200.0), end=NOW + timedelta(hours=12))
    later = tune(policy=policy, now=NOW + timedelta(hours=12))
    assert later.recommendation is not None and not later.applied
    next_day = tune(policy=policy, now=NOW + timedelta(hours=25))
    assert next_day.applied
    policy.refresh_from_db()
    assert policy.ttl_seconds == next_day.recommendation.recommended_ttl_seconds != 1200


def test_an_admin_accepts_a_recommendation_in_one_step(policy: TTLPolicy, alice: User) -> None:
    traffic(policy, alice, dict.fromkeys(range(30), 1200.0))
    recommendation = recommend(policy=policy, now=NOW)
    assert recommendation is not None

    assert apply_recommendation(recommendation=recommendation, by="admin", source=TTLPolicyChange.Source.ADMIN)

    policy.refresh_from_db()
    recommendation.refresh_from_db()
    assert policy.ttl_seconds == 1200
    assert recommendation.applied_by == "admin"
    assert TTLPolicyChange.objects.get(policy=policy).source == "admin"
