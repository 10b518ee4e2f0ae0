"""A stalled Redis costs a lookup the cache's own short read timeout, not the seed's 5 s."""

import time

import pytest
import redis
from django.conf import settings
from django_redis import get_redis_connection

from cachecore.breaker import Breaker
from cachecore.store import TokenStore
from tests.cachecore.conftest import CountingTokenizer

TTL = 300


def test_the_token_cache_reads_with_its_own_short_timeout_and_django_s_cache_keeps_its_own() -> None:
    tokens = get_redis_connection("tokens").connection_pool.connection_kwargs
    default = get_redis_connection("default").connection_pool.connection_kwargs
    assert settings.TOKENCACHE_CACHE_READ_TIMEOUT == 0.25
    assert tokens["socket_timeout"] == settings.TOKENCACHE_CACHE_READ_TIMEOUT
    assert tokens["socket_connect_timeout"] == settings.TOKENCACHE_CONNECT_TIMEOUT == 5.0
    assert default["socket_timeout"] == settings.TOKENCACHE_READ_TIMEOUT == 5.0


def test_a_lookup_on_a_stalled_redis_waits_the_cache_read_timeout_not_five_seconds(
    redis_factory, counting: CountingTokenizer
) -> None:
    server = redis_factory()
    # The `tokens` alias's connection options (timeouts, pool class), on a server this test may pause.
    configured = get_redis_connection("tokens").connection_pool
    options = {**configured.connection_kwargs, **server.client().connection_pool.connection_kwargs}
    options["socket_timeout"] = configured.connection_kwargs["socket_timeout"]
    pool = redis.BlockingConnectionPool(connection_class=configured.connection_class, max_connections=2, **options)
    store = TokenStore(redis.Redis(connection_pool=pool), breaker=Breaker(name="test", fail_max=5))
    try:
        store.get_many(counting, ["stalled"], ttl=TTL)  # connect before the pause
        server.pause(3000)
        started = time.monotonic()
        batch = store.get_many(counting, ["stalled"], ttl=TTL)
        waited = time.monotonic() - started
    finally:
        pool.disconnect()
    assert batch.bypassed == 1
    assert waited == pytest.approx(0.25, abs=0.2)  # before: 5 s, the seed's read timeout
