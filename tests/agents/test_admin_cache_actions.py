"""Admin actions on the token cache: warm agents, free entries, accept the tuner's recommendation."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from agents.models import Chunk, TTLPolicy, TTLPolicyChange, TTLRecommendation, WarmingRun
from cachecore.keys import token_key
from cachecore.tokenizers import get_tokenizer
from tests.conftest import Demo
from tests.redis_process import RedisProcess


@pytest.fixture
def admin_client(root: User) -> Client:
    client = Client()
    client.force_login(root)
    return client


def cached_keys(slug: str, redis_server: RedisProcess) -> int:
    chunks = Chunk.objects.filter(document__agent__slug=slug).select_related("document__agent")
    keys = {token_key(get_tokenizer(c.document.agent.tokenizer_spec).fingerprint, c.content_hash) for c in chunks}
    return int(redis_server.client().exists(*keys))


def test_the_warm_action_queues_a_run_per_agent_shown_under_warming_runs(demo: Demo, admin_client: Client) -> None:
    agents = [demo.agents["support"].pk, demo.agents["business"].pk]

    response = admin_client.post(
        "/admin/agents/agent/", {"action": "warm_cache", "_selected_action": agents}, follow=True
    )

    assert "Queued 2 warming runs" in response.content.decode()
    assert sorted(WarmingRun.objects.values_list("agent_id", flat=True)) == sorted(agents)
    assert set(WarmingRun.objects.values_list("reason", "status")) == {("admin", "queued")}
    assert admin_client.get("/admin/agents/warmingrun/").status_code == 200


def test_the_forget_actions_remove_an_agents_or_a_documents_entries_and_say_how_many(
    demo: Demo, admin_client: Client, redis_server: RedisProcess
) -> None:
    call_command("warm_cache", "--agent", "support", stdout=io.StringIO())
    before = cached_keys("support", redis_server)
    document = demo.agents["support"].documents.order_by("pk").first()
    assert document is not None
    in_document = len(set(document.chunks.values_list("content_hash", flat=True)))

    response = admin_client.post(
        "/admin/agents/knowledgedocument/",
        {"action": "forget_cached_tokens", "_selected_action": [document.pk]},
        follow=True,
    )
    assert f"Removed {in_document} cached entries" in response.content.decode()

    response = admin_client.post(
        "/admin/agents/agent/",
        {"action": "forget_cached_tokens", "_selected_action": [demo.agents["support"].pk]},
        follow=True,
    )
    assert f"Removed {before - in_document} cached entries" in response.content.decode()
    assert cached_keys("support", redis_server) == 0


def _recommendation(policy: TTLPolicy, ttl: int) -> TTLRecommendation:
    return TTLRecommendation.objects.create(
        policy=policy, window_seconds=7 * 86400, answers=200, lookups=800, hits=600, misses=200, reuses=150,
        reuse_p50_seconds=600, reuse_p90_seconds=ttl, reuse_p99_seconds=ttl * 3, reuse_target_seconds=ttl,
        target_share=0.9, current_ttl_seconds=policy.ttl_seconds, recommended_ttl_seconds=ttl,
    )  # fmt: skip


def test_an_admin_accepts_the_recommendation_from_the_policy_form_in_one_click(
    demo: Demo, admin_client: Client
) -> None:
    policy = demo.agents["support"].ttl_policy
    recommendation = _recommendation(policy, ttl=policy.min_ttl_seconds)
    url = f"/admin/agents/ttlpolicy/{policy.pk}/change/"
    form = admin_client.get(url)
    assert "Save and apply this recommendation" in form.content.decode()
    data = {
        "name": policy.name, "ttl_seconds": policy.ttl_seconds, "expiry_mode": policy.expiry_mode,
        "rationale": policy.rationale, "tuning_guidance": policy.tuning_guidance,
        "min_ttl_seconds": policy.min_ttl_seconds, "max_ttl_seconds": policy.max_ttl_seconds,
        "tuning_interval_seconds": policy.tuning_interval_seconds,
        "changes-TOTAL_FORMS": 0, "changes-INITIAL_FORMS": 0, "changes-MIN_NUM_FORMS": 0, "changes-MAX_NUM_FORMS": 0,
        "_apply_recommendation": recommendation.pk,
    }  # fmt: skip

    response = admin_client.post(url, data, follow=True)

    assert response.status_code == 200
    policy.refresh_from_db()
    assert policy.ttl_seconds == policy.min_ttl_seconds
    change = TTLPolicyChange.objects.get(policy=policy, field="ttl_seconds")
    assert (change.source, change.by) == ("admin", "root")
    assert "History" in response.content.decode()


def test_the_recommendations_list_shows_the_evidence(demo: Demo, admin_client: Client) -> None:
    _recommendation(demo.agents["support"].ttl_policy, ttl=1800)
    page = admin_client.get("/admin/agents/ttlrecommendation/").content.decode()
    assert "150 chunk reuses, 90% within 30 min" in page
