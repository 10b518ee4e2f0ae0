"""Pytest plugin: a private Redis Cluster (3 primaries, 3 replicas) and a Sentinel deployment
(a primary, a replica, three Sentinels), on loopback, started on first use.

Tests that need them carry the `cluster` marker, which pytest.ini deselects (`-m "not
cluster"`): starting six cluster nodes and waiting out failovers costs tens of seconds that
the everyday run (and its PostgreSQL pass) need not pay twice. `make test-cluster` runs
them (`-m cluster`): the cache core's specifications on a cluster, and the failover tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.redis_cluster import ClusterDeployment, SentinelDeployment

_started: list[ClusterDeployment | SentinelDeployment] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs a Redis Cluster or Sentinel deployment (make test-cluster)")


def pytest_unconfigure(config: pytest.Config) -> None:
    for deployment in _started:
        deployment.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> ClusterDeployment:
    """One cluster for the session's specification tests (flushed by each test that uses it)."""
    cluster = ClusterDeployment()
    _started.append(cluster)
    return cluster.start()


@pytest.fixture
def cluster_factory() -> Iterator[Callable[[], ClusterDeployment]]:
    """A cluster of the test's own, which it may break (kill a primary); deleted afterwards."""
    started: list[ClusterDeployment] = []

    def start() -> ClusterDeployment:
        cluster = ClusterDeployment()
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.cleanup()


@pytest.fixture
def sentinel_factory() -> Iterator[Callable[[], SentinelDeployment]]:
    """A primary, a replica and three Sentinels of the test's own; deleted afterwards."""
    started: list[SentinelDeployment] = []

    def start() -> SentinelDeployment:
        deployment = SentinelDeployment()
        started.append(deployment)
        return deployment.start()

    yield start
    for deployment in started:
        deployment.cleanup()
