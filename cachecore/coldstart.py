"""Noticing that the token cache came back empty: a Redis restart, a flush, a new server.

Redis runs without persistence (deploy/redis.conf), so a restart loses every entry. A marker
key is written with `SET NX`: when it is written, it was missing, so the cache is new and
cold. Like every key it has a TTL, refreshed on each check; evicted under memory pressure it
reads as a cold start too, which costs one re-warm of entries that are mostly still there.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from cachecore.breaker import BreakerOpen
from cachecore.store import default_store

MARKER = "tc:v1:warm-marker"
MARKER_TTL_SECONDS = 2 * 86400


def cache_is_new() -> bool | None:
    """True once per empty cache (the first check after it lost the marker), else False.

    None when Redis cannot be asked (down, or its breaker open): nothing is known, so nothing
    should be warmed.
    """
    store = default_store()
    try:
        with store.breaker.guard():
            created = store.client.set(MARKER, b"1", ex=MARKER_TTL_SECONDS, nx=True)
            if not created:
                store.client.expire(MARKER, MARKER_TTL_SECONDS)
    except (BreakerOpen, RedisError):
        return None
    return bool(created)
