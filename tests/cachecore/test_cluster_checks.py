"""The system checks on Redis Cluster and Sentinel: bounded nodes, covered slots, reachable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cachecore import checks
from tests.redis_cluster import ClusterDeployment, SentinelDeployment


def test_an_unreachable_cluster_is_a_warning_not_a_crash(settings: Any) -> None:
    from tests.redis_cluster import cluster_port

    settings.REDIS_URL = f"redis+cluster://127.0.0.1:{cluster_port()},127.0.0.1:{cluster_port()}"
    assert [w.id for w in checks.check_redis_memory_policy()] == ["cachecore.W002"]


def test_an_unusable_redis_url_is_a_warning(settings: Any) -> None:
    settings.REDIS_URL = "redis+sentinel://127.0.0.1:26379"  # no primary's name
    found = checks.check_redis_memory_policy()
    assert [w.id for w in found] == ["cachecore.W002"] and "primary's name" in found[0].msg


@pytest.mark.cluster
def test_a_healthy_cluster_passes_and_an_unbounded_node_is_named(
    redis_cluster: ClusterDeployment, settings: Any
) -> None:
    settings.REDIS_URL = redis_cluster.url()
    assert checks.check_redis_memory_policy() == []
    node = redis_cluster.primaries()[1]
    node.client().config_set("maxmemory", "0")
    try:
        found = checks.check_redis_memory_policy()
    finally:
        node.client().config_set("maxmemory", "64mb")
    assert [w.id for w in found] == ["cachecore.W001"]
    assert f":{node.port}" in found[0].msg


@pytest.mark.cluster
def test_a_cluster_with_uncovered_slots_is_a_warning(
    cluster_factory: Callable[[], ClusterDeployment], settings: Any
) -> None:
    cluster = cluster_factory()
    settings.REDIS_URL = cluster.url()
    owner = cluster.primaries()[0]
    first_slot = owner.client().execute_command("CLUSTER", "SLOTS")
    slot = next(start for start, _end, (_host, port, *_), *_ in first_slot if port == owner.port)
    owner.client().execute_command("CLUSTER", "DELSLOTS", slot)
    found = checks.check_redis_memory_policy()
    assert [w.id for w in found] == ["cachecore.W003"] and "16383 of 16384" in found[0].msg


@pytest.mark.cluster
def test_sentinel_checks_the_current_primary(sentinel_factory: Callable[[], SentinelDeployment], settings: Any) -> None:
    deployment = sentinel_factory()
    settings.REDIS_URL = deployment.url(0)
    assert checks.check_redis_memory_policy() == []
    deployment.primary.client().config_set("maxmemory-policy", "noeviction")
    assert [w.id for w in checks.check_redis_memory_policy()] == ["cachecore.W001"]
