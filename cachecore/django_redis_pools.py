"""django-redis connection factories that keep one pool per URL *and timeouts*.

django-redis keeps one connection pool per URL in a process-wide dict, shared by every cache
alias on that URL, whatever each alias's options say: the first alias to connect sets the
timeouts for all. The `tokens` alias reads with its own short timeout
(`TOKENCACHE_CACHE_READ_TIMEOUT`) while Django's cache keeps `TOKENCACHE_READ_TIMEOUT`, so
its pools are keyed by timeouts too. (The cluster factory, `django_redis_cluster.py`, already
keys its clients so.)
"""

from typing import Any

from django_redis.pool import ConnectionFactory, SentinelConnectionFactory


def _pool_key(params: dict[str, Any]) -> str:
    return f"{params['url']} timeout={params.get('socket_timeout')} connect={params.get('socket_connect_timeout')}"


class ConnectionFactoryByTimeouts(ConnectionFactory[Any, Any, Any]):
    """django-redis's factory on one server, with pools keyed by URL and timeouts."""

    def get_or_create_connection_pool(self, params: dict[str, Any]) -> Any:
        key = _pool_key(params)
        if key not in self._pools:
            self._pools[key] = self.get_connection_pool(params)
        return self._pools[key]


class SentinelConnectionFactoryByTimeouts(SentinelConnectionFactory[Any, Any, Any]):
    """django-redis's Sentinel factory, with pools keyed by URL and timeouts."""

    def get_or_create_connection_pool(self, params: dict[str, Any]) -> Any:
        key = _pool_key(params)
        if key not in self._pools:
            self._pools[key] = self.get_connection_pool(params)
        return self._pools[key]
