"""django-redis on Redis Cluster: a connection factory whose client is redis-py's `RedisCluster`.

django-redis builds one `redis.Redis` on a pool from the LOCATION URL; a cluster needs
redis-py's cluster client instead. Selected per cache alias with the `CONNECTION_FACTORY`
option (settings.py does so when `REDIS_URL` is `redis+cluster://…`). One client per
URL and process, however many threads (Django builds a cache backend per thread).
What Django's cache asks of it here is single-key (get, set, add, delete); the token
store groups its own multi-key commands by slot (cachecore/store/token_store.py).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django_redis.pool import ConnectionFactory

from cachecore.redis_clients import make_client

_clients: dict[tuple[int, str, int, float, float], Any] = {}
_lock = threading.Lock()


class ClusterConnectionFactory(ConnectionFactory):
    def connect(self, url: str) -> Any:
        pool_size = int(self.pool_cls_kwargs.get("max_connections", 10))
        connect_timeout = float(self.options.get("SOCKET_CONNECT_TIMEOUT", 5.0))
        read_timeout = float(self.options.get("SOCKET_TIMEOUT", 5.0))
        # Keyed by pid too: a forked child (Celery's prefork pool) builds its own client rather
        # than share the parent's node map, its lock and its sockets.
        key = (os.getpid(), url, pool_size, connect_timeout, read_timeout)
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = make_client(
                    url, pool_size=pool_size, connect_timeout=connect_timeout, read_timeout=read_timeout
                )
        return client

    def disconnect(self, connection: Any) -> None:
        # Shared by every thread's backend: never closed by one of them.
        return None
