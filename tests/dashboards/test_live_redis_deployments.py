"""The live panel asks the Redis deployment REDIS_URL names: a cluster's primaries, or Sentinel's primary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dashboards.live import redis_state
from tests.redis_cluster import ClusterDeployment, SentinelDeployment

pytestmark = pytest.mark.cluster


def test_a_cluster_answers_with_its_primaries_figures_summed(redis_cluster: ClusterDeployment, settings: Any) -> None:
    settings.REDIS_URL = redis_cluster.url()
    client = redis_cluster.client()
    client.set("tc:v1:tok:live-panel:a", b"x", ex=60)
    client.set("tc:v1:tok:live-panel:b", b"x", ex=60)

    state = redis_state()

    assert state.answers, state.error
    assert state.keys >= 2
    assert state.maxmemory == 3 * 64 * 1024 * 1024
    assert state.policy == "allkeys-lru"
    assert state.used_memory and state.connected_clients


def test_sentinels_current_primary_answers(sentinel_factory: Callable[[], SentinelDeployment], settings: Any) -> None:
    deployment = sentinel_factory()
    settings.REDIS_URL = deployment.url(0)

    state = redis_state()

    assert state.answers, state.error
    assert state.maxmemory > 0
