"""Past one Redis, by settings alone: one Tokencache process follows a failover, no restart.

Sentinel: Django's cache, the token store, the rate limiter's client, Celery's broker and
the channel layer, all configured by `REDIS_URL=redis+sentinel://…` alone (the broker and
the channel layer default to databases 1 and 2 of the same primary).
Cluster: the same process with `REDIS_URL=redis+cluster://…`, the broker and the channel
layer on a Redis of their own (they cannot use a cluster). Run by `make test-cluster`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.redis_cluster import ClusterDeployment, SentinelDeployment
from tests.redis_process import RedisProcess

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = {"cache", "tokens", "rate_limiter", "broker", "channels"}


def _probe(env_changes: dict[str, str]) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("CELERY_BROKER_URL", "CHANNELS_REDIS_URL")}
    env.update(
        TOKENCACHE_CONNECT_TIMEOUT="0.5",
        TOKENCACHE_READ_TIMEOUT="0.5",
        LOG_LEVEL="ERROR",
        PYTHONPATH=str(ROOT),
        **env_changes,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.redis_probe", "30"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _round(probe: subprocess.Popen[str]) -> dict[str, object]:
    assert probe.stdin is not None and probe.stdout is not None
    probe.stdin.write("go\n")
    probe.stdin.flush()
    while True:  # skip the log lines (JSON too) that precede the round's result
        line = json.loads(probe.stdout.readline())
        if "round" in line:
            return dict(line)


def _stop(probe: subprocess.Popen[str]) -> None:
    assert probe.stdin is not None
    probe.stdin.close()
    probe.wait(timeout=30)


def test_every_redis_user_follows_the_primary_that_sentinel_fails_over(
    sentinel_factory: Callable[[], SentinelDeployment],
) -> None:
    deployment = sentinel_factory()
    probe = _probe({"REDIS_URL": deployment.url(0)})
    try:
        before = _round(probe)
        assert set(before["done"]) == EVERYTHING, before  # type: ignore[call-overload]
        deployment.primary.kill()
        killed_at = time.monotonic()
        after = _round(probe)
        assert set(after["done"]) == EVERYTHING, after  # type: ignore[call-overload]
        print("sentinel: seconds after the kill until each worked again:", after["done"])
        assert deployment.current_primary_port() == deployment.replica.port
        assert time.monotonic() - killed_at < 30
    finally:
        _stop(probe)


def test_every_redis_user_works_on_a_cluster_and_through_a_primary_failing_over(
    cluster_factory: Callable[[], ClusterDeployment], redis_server: RedisProcess
) -> None:
    cluster = cluster_factory()
    probe = _probe(
        {
            "REDIS_URL": cluster.url(),
            "CELERY_BROKER_URL": redis_server.url(1),
            "CHANNELS_REDIS_URL": redis_server.url(2),
        }
    )
    try:
        before = _round(probe)
        assert set(before["done"]) == EVERYTHING, before  # type: ignore[call-overload]
        cluster.primaries()[0].kill()
        after = _round(probe)
        assert set(after["done"]) == EVERYTHING, after  # type: ignore[call-overload]
        print("cluster: seconds after the kill until each worked again:", after["done"])
    finally:
        _stop(probe)
