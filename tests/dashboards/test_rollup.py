"""The rollups: the dashboards' numbers equal the answer records, and re-running changes nothing."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from agents.chat import run_turn
from agents.models import Message
from dashboards.figures import floor_to
from dashboards.models import Rollup
from dashboards.queries import Scope, load_window
from dashboards.rollup import MINUTE, run_rollup
from tests.conftest import Demo

QUESTION = "What should I do when Redis is down?"


def _turns(demo: Demo, alice: User) -> None:
    run_turn(user=alice, agent=demo.agents["support"], message=QUESTION)  # misses
    run_turn(user=alice, agent=demo.agents["support"], message=QUESTION)  # the same chunks: hits
    answer = run_turn(user=alice, agent=demo.agents["documentation"], message="how does the with statement work")
    Message.objects.filter(pk=answer.answer_message.pk).update(feedback=1, feedback_at=timezone.now())


def _raw(**filters: object) -> dict[str, int]:
    answers = Message.objects.filter(role="assistant", status="ok", **filters)
    sums = answers.aggregate(
        hits=Sum("cache_hits"),
        misses=Sum("cache_misses"),
        bypassed=Sum("cache_bypassed"),
        from_cache=Sum("tokens_from_cache"),
        tokenized=Sum("tokens_tokenized"),
        context=Sum("context_tokens"),
    )
    return {key: int(value or 0) for key, value in sums.items()} | {"turns": answers.count()}


def _shown(key: str, scope: Scope | None = None) -> dict[str, int]:
    total = load_window(key, scope).total()
    return {
        "hits": total.hits,
        "misses": total.misses + total.corrupt,  # the records count a corrupt entry among the misses
        "bypassed": total.bypassed,
        "from_cache": total.tokens_from_cache,
        "tokenized": total.tokens_tokenized,
        "context": total.context_tokens,
        "turns": total.turns,
    }


def test_the_dashboards_numbers_equal_the_answer_records(demo: Demo, alice: User) -> None:
    _turns(demo, alice)
    raw = _raw()
    assert raw["hits"] > 0 and raw["misses"] > 0
    # Before any rollup (everything read from the records) and after it (everything from rollups).
    for _ in range(2):
        for key in ("hour", "day", "month"):
            assert _shown(key) == raw, key
        support = demo.agents["support"]
        assert _shown("day", Scope(agent_id=support.pk)) == _raw(conversation__agent=support)
        assert _shown("day", Scope(policy_id=support.ttl_policy_id)) == _raw(
            conversation__agent__ttl_policy=support.ttl_policy_id
        )
        run_rollup(now=timezone.now() + 2 * MINUTE)
    assert Rollup.objects.filter(resolution="minute").exists()
    assert load_window("day").total().feedback_up == 1


def test_rerunning_a_rollup_rewrites_the_same_numbers(demo: Demo, alice: User) -> None:
    _turns(demo, alice)
    later = timezone.now() + 2 * MINUTE
    run_rollup(now=later)

    def snapshot() -> list[tuple[object, ...]]:
        return sorted(
            Rollup.objects.values_list(
                "resolution",
                "start",
                "agent_id",
                "turns",
                "hits",
                "misses",
                "bypassed",
                "corrupt",
                "tokens_from_cache",
                "tokenize_ms_saved",
                "lookup_hist",
                "total_hist",
                "context_hist",
                "feedback_up",
            )
        )

    first = snapshot()
    run_rollup(now=later)
    run_rollup(now=later + 3 * MINUTE)
    assert snapshot() == first


def test_hours_and_days_are_the_sums_of_their_minutes(demo: Demo, alice: User) -> None:
    _turns(demo, alice)
    run_rollup(now=timezone.now() + 2 * MINUTE)
    for resolution in ("hour", "day"):
        for field in ("turns", "hits", "misses", "tokens_from_cache", "feedback_up"):
            minutes = Rollup.objects.filter(resolution="minute").aggregate(v=Sum(field))["v"]
            assert Rollup.objects.filter(resolution=resolution).aggregate(v=Sum(field))["v"] == minutes


def test_minutes_older_than_7_days_are_pruned_and_their_hours_kept(demo: Demo, alice: User) -> None:
    _turns(demo, alice)
    now = timezone.now()
    run_rollup(now=now + 2 * MINUTE)
    hours = Rollup.objects.filter(resolution="hour").count()
    run_rollup(now=now + timedelta(days=8))
    assert not Rollup.objects.filter(resolution="minute").exists()
    assert Rollup.objects.filter(resolution="hour").count() == hours


def test_feedback_given_later_lands_in_the_answers_minute(demo: Demo, alice: User) -> None:
    answer = run_turn(user=alice, agent=demo.agents["support"], message=QUESTION).answer_message
    run_rollup(now=timezone.now() + 2 * MINUTE)
    run_rollup(now=timezone.now() + 30 * MINUTE)  # the answer's minute is now well before the re-read window
    Message.objects.filter(pk=answer.pk).update(feedback=-1, feedback_at=timezone.now() + 31 * MINUTE)
    run_rollup(now=timezone.now() + 32 * MINUTE)
    row = Rollup.objects.get(resolution="minute", start=floor_to(answer.created, MINUTE))
    assert row.feedback_down == 1


def test_a_turn_shows_on_the_dashboard_before_the_next_rollup(demo: Demo, alice: User, root: User) -> None:
    run_rollup()
    run_turn(user=alice, agent=demo.agents["support"], message=QUESTION)
    client = Client()
    client.force_login(root)
    rows = client.get("/dashboards/data/figures.json?window=hour").json()["charts"]["agents"]["rows"]
    assert [row[0] for row in rows] == ["support"] and rows[0][6] == 1  # one answered turn
