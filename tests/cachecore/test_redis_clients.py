"""One URL names the Redis deployment: one server, a cluster, or Sentinel's primary."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from redis.cluster import RedisCluster

from cachecore.redis_clients import (
    SentinelBlockingConnectionPool,
    celery_broker,
    channels_host,
    make_client,
    parse,
)
from tests.redis_cluster import ClusterDeployment, SentinelDeployment


def test_a_plain_url_is_one_server_on_a_bounded_blocking_pool() -> None:
    assert parse("redis://127.0.0.1:6391/0").mode == "single"
    client = make_client("redis://127.0.0.1:6391/3", pool_size=4, connect_timeout=0.5)
    assert isinstance(client.connection_pool, redis.BlockingConnectionPool)
    assert client.connection_pool.max_connections == 4
    assert client.connection_pool.connection_kwargs["db"] == 3


def test_a_cluster_url_lists_its_nodes_and_has_only_database_zero() -> None:
    target = parse("redis+cluster://user:s%40cret@10.0.0.1:7000,10.0.0.2:7001")
    assert (target.mode, target.hosts) == ("cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001)))
    assert (target.username, target.password) == ("user", "s@cret")
    assert parse("rediss+cluster://h:7000").tls
    with pytest.raises(ValueError, match="only database 0"):
        parse("redis+cluster://h:7000/3")


def test_a_sentinel_url_names_the_sentinels_the_primary_and_the_database() -> None:
    target = parse("redis+sentinel://s1:26379,s2/mymaster/2")
    assert (target.mode, target.hosts, target.master, target.db) == (
        "sentinel",
        (("s1", 26379), ("s2", 26379)),
        "mymaster",
        2,
    )
    with pytest.raises(ValueError, match="primary's name"):
        parse("redis+sentinel://s1:26379")


def test_celery_and_channels_follow_sentinel_but_refuse_a_cluster() -> None:
    assert celery_broker("redis://h:6391/1") == ("redis://h:6391/1", {})
    assert celery_broker("redis+sentinel://s1:26379,s2:26380/mymaster/1") == (
        "sentinel://s1:26379/1;sentinel://s2:26380/1",
        {"master_name": "mymaster"},
    )
    assert channels_host("redis+sentinel://s1:26379/mymaster/2") == {
        "sentinels": [("s1", 26379)],
        "master_name": "mymaster",
        "db": 2,
    }
    for refuse in (celery_broker, channels_host):
        with pytest.raises(ValueError, match="cannot use Redis Cluster"):
            refuse("redis+cluster://h:7000")


@pytest.mark.cluster
def test_a_cluster_client_is_redis_pys_with_blocking_node_pools(redis_cluster: ClusterDeployment) -> None:
    client = make_client(redis_cluster.url(), pool_size=3)
    assert isinstance(client, RedisCluster)
    pools = [client.get_redis_connection(node).connection_pool for node in client.get_nodes()]
    assert pools and all(isinstance(p, redis.BlockingConnectionPool) and p.max_connections == 3 for p in pools)
    client.close()


@pytest.mark.cluster
def test_sentinels_primary_is_on_a_bounded_pool_that_waits(
    sentinel_factory: Callable[[], SentinelDeployment],
) -> None:
    deployment = sentinel_factory()
    client = make_client(deployment.url(0), pool_size=2, connect_timeout=0.2)
    pool = client.connection_pool
    assert isinstance(pool, SentinelBlockingConnectionPool) and pool.max_connections == 2
    held = [pool.get_connection(), pool.get_connection()]
    with pytest.raises(redis.ConnectionError, match="No connection available"):
        pool.get_connection()  # waited 0.2 s, then gave up: a burst waits instead of failing at once
    for connection in held:
        pool.release(connection)
    assert client.ping()
