"""Redis clients from one URL: one server, a Redis Cluster, or the primary that Sentinel names.

  redis://host:6379/0   rediss://…   unix://…            one server (redis-py's own URL forms)
  redis+cluster://host1:7000,host2:7000                   Redis Cluster: any reachable node finds the rest
  redis+sentinel://host1:26379,host2:26379/mymaster/0     the current primary of `mymaster` (database 0)

`rediss+cluster://` and `rediss+sentinel://` use TLS; `user:password@` before the hosts
authenticates with the Redis servers (Sentinel itself is asked without credentials). The
mode is chosen by the URL so that production moves past one Redis by changing
`REDIS_URL`, not code (docs/deploy.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel, SentinelConnectionPool

Mode = Literal["single", "cluster", "sentinel"]

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


class SentinelBlockingConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's primary on a bounded pool that waits for a free connection (up to `timeout`).

    redis-py's SentinelConnectionPool fails at once when all `max_connections` are in use,
    which the breaker would count as Redis failing during a mere burst; one server's pool
    waits (settings.py), so Sentinel's does too.
    """


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL names. `hosts` are cluster nodes or Sentinels; empty for one server."""

    mode: Mode
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    master: str = ""  # Sentinel's name for the monitored primary
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse(url: str) -> RedisTarget:
    """Split a Redis URL into its mode and parts; ValueError when it cannot be used."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in CLUSTER_SCHEMES + SENTINEL_SCHEMES:
        return RedisTarget(mode="single", url=url)
    parts = urlsplit(url)
    credentials, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    hosts: list[tuple[str, int]] = []
    default_port = 26379 if scheme in SENTINEL_SCHEMES else 6379
    for item in filter(None, hostlist.split(",")):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", str(default_port))
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    path = [segment for segment in parts.path.split("/") if segment]
    common = {
        "url": url,
        "hosts": tuple(hosts),
        "username": unquote(username) or None,
        "password": unquote(password) or None,
        "tls": scheme.startswith("rediss"),
    }
    if scheme in CLUSTER_SCHEMES:
        if path and path != ["0"]:
            raise ValueError("Redis Cluster has only database 0")
        return RedisTarget(mode="cluster", **common)  # type: ignore[arg-type]
    if not path:
        raise ValueError("redis+sentinel:// needs the primary's name: redis+sentinel://host:26379/mymaster/0")
    return RedisTarget(mode="sentinel", master=path[0], db=int(path[1]) if len(path) > 1 else 0, **common)  # type: ignore[arg-type]


def mode_of(url: str) -> Mode:
    return parse(url).mode


def make_client(
    url: str,
    *,
    pool_size: int = 10,
    connect_timeout: float = 5.0,
    read_timeout: float = 5.0,
    db: int | None = None,
) -> Any:
    """A client for `url`: `redis.Redis` (one server, or Sentinel's primary) or `RedisCluster`.

    Pools are bounded: one server and Sentinel's primary wait up to `connect_timeout` for a
    free connection; a cluster keeps `pool_size` connections per node. `db` overrides the
    URL's database (not for a cluster). No client retries: callers decide (the breaker).
    """
    target = parse(url)
    timeouts: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "socket_timeout": read_timeout}
    if target.mode == "single":
        extra = {"db": db} if db is not None else {}
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=connect_timeout, **timeouts, **extra
        )
        return redis.Redis(connection_pool=pool)
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.mode == "cluster":
        (first_host, first_port), *others = target.hosts
        scheme = "rediss" if target.tls else "redis"
        return RedisCluster(
            # Given a URL, redis-py builds each node's pool with `connection_pool_class`: a
            # blocking pool, so a burst waits for a connection instead of failing.
            url=f"{scheme}://{first_host}:{first_port}",
            startup_nodes=[ClusterNode(host, port) for host, port in others],
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=pool_size,
            timeout=connect_timeout,
            # During a failover some slots have no primary for a moment: keep serving the others.
            require_full_coverage=False,
            **auth,
            **timeouts,
        )
    sentinel = Sentinel(
        list(target.hosts),
        sentinel_kwargs={**timeouts, "ssl": target.tls} if target.tls else timeouts,
        ssl=target.tls,
        **auth,
        **timeouts,
    )
    return sentinel.master_for(
        target.master,
        db=target.db if db is None else db,
        connection_pool_class=SentinelBlockingConnectionPool,
        max_connections=pool_size,
        timeout=connect_timeout,
    )


def sentinel_hosts(url: str) -> list[tuple[str, int]]:
    return list(parse(url).hosts)


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and transport options for a Redis URL of this module's forms.

    Sentinel becomes kombu's `sentinel://host:port/db;sentinel://…` with the primary's name
    in `master_name`. A cluster cannot carry Celery's broker (kombu's Redis transport
    sends multi-key commands across slots): ValueError, with what to use instead.
    """
    target = parse(url)
    if target.mode == "single":
        return url, {}
    if target.mode == "cluster":
        raise ValueError(
            "Celery's broker cannot use Redis Cluster: set CELERY_BROKER_URL to a single Redis, "
            "a redis+sentinel:// URL or an AMQP broker (docs/deploy.md)"
        )
    auth = f":{target.password}@" if target.password else ""
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.hosts)
    return broker, {"master_name": target.master}


def channels_host(url: str) -> str | dict[str, Any]:
    """One entry of channels-redis's `hosts` for a Redis URL of this module's forms."""
    target = parse(url)
    if target.mode == "single":
        return url
    if target.mode == "cluster":
        raise ValueError(
            "channels-redis cannot use Redis Cluster: set CHANNELS_REDIS_URL to a single Redis "
            "or a redis+sentinel:// URL (docs/deploy.md)"
        )
    return {
        "sentinels": list(target.hosts),
        "master_name": target.master,
        "db": target.db,
        **({"password": target.password} if target.password else {}),
    }
