"""Per-user rate limit on chat turns, shared by every interface, kept in Redis.

A fixed one-minute window per user (`INCR` + `EXPIRE` in one round trip): every web
process sees the same count, and a burst at a window edge can reach at most twice the
limit, which is fine for a fairness limit (it guards the model server, not a bill).

Redis trouble must never stop chat (invariant 4 of docs/architecture.md), nor switch the limit off: the
limiter has its own client with short timeouts, logs once, and skips Redis for a cool-down
so a dead or paused Redis costs no request more than one short timeout. Meanwhile each
process counts in memory with the same limit per window: a user may then get up to the limit
once per web process (`WEB_WORKERS`), not the unlimited turns of a limiter that fails open.

A burst is not trouble: at most `TOKENCACHE_POOL_SIZE` checks talk to Redis at once, the
others wait up to `POOL_WAIT_SECONDS` for a turn, and one that still finds every connection
busy is let through uncounted, without switching the limiter off. (A gate of our own rather
than redis-py's `BlockingConnectionPool`, which reports exhaustion as a plain
`ConnectionError`, the same class as "Redis is down".)

The counters live in the cache's Redis database, whose `allkeys-lru` policy may evict them
under memory pressure: a user then gets a fresh window early, acceptable for a fairness limit.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from agents.errors import RateLimited
from cachecore.redis_clients import make_client

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 0.25
POOL_WAIT_SECONDS = 0.5
COOL_DOWN_SECONDS = 10.0
WINDOW_SECONDS = 60

_lock = threading.Lock()
_limiters: dict[tuple[str, int], _Limiter] = {}
_skip_until = 0.0
# The fallback while Redis is unavailable: (user id, window) -> turns counted by this process.
_local_lock = threading.Lock()
_local_counts: dict[tuple[int, int], int] = {}


@dataclass(frozen=True)
class _Limiter:
    client: Any  # redis.Redis or RedisCluster
    # One slot per pooled connection: holding a slot guarantees the pool has a connection to give.
    slots: threading.BoundedSemaphore


def _limiter() -> _Limiter:
    url, size = settings.REDIS_URL, settings.TOKENCACHE_POOL_SIZE
    with _lock:
        limiter = _limiters.get((url, size))
        if limiter is None:
            # One server, a cluster (the counter's INCR and EXPIRE share one key, so one slot) or
            # Sentinel's current primary, whichever REDIS_URL names.
            client = make_client(url, pool_size=size, connect_timeout=TIMEOUT_SECONDS, read_timeout=TIMEOUT_SECONDS)
            limiter = _limiters[(url, size)] = _Limiter(client=client, slots=threading.BoundedSemaphore(size))
        return limiter


def check_chat_rate(user_id: int) -> None:
    """Count one chat turn for the user; raise `RateLimited` (429) past the limit. Never raises for Redis."""
    limit = settings.TOKENCACHE_CHAT_RATE_PER_MINUTE
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    count = _count_locally(user_id, window) if now < _skip_until else _count_in_redis(user_id, window)
    if count is not None and count > limit:
        retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
        raise RateLimited(
            f"More than {limit} chat turns in a minute; try again in {retry_after} s.", retry_after=retry_after
        )


def _count_in_redis(user_id: int, window: int) -> int | None:
    """The user's turns in this window across every process; None when every connection is busy."""
    global _skip_until
    key = f"tc:rl:chat:{user_id}:{window}"
    limiter = _limiter()
    if not limiter.slots.acquire(timeout=POOL_WAIT_SECONDS):
        # Busy, not broken: let this turn through, but keep counting the next ones.
        logger.info("chat_rate_limit_busy", extra={"waited_seconds": POOL_WAIT_SECONDS})
        return None
    try:
        pipe = limiter.client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS + 5)
        return int(pipe.execute()[0])
    except (redis.RedisError, OSError) as error:
        _skip_until = time.time() + COOL_DOWN_SECONDS
        logger.warning(
            "chat_rate_limit_unavailable",
            extra={"error": repr(error), "local_fallback_seconds": COOL_DOWN_SECONDS},
        )
        return _count_locally(user_id, window)
    finally:
        limiter.slots.release()


def _count_locally(user_id: int, window: int) -> int:
    """This process's count of the user's turns in this window; earlier windows are forgotten."""
    with _local_lock:
        for stale in [key for key in _local_counts if key[1] < window]:
            del _local_counts[stale]
        count = _local_counts[(user_id, window)] = _local_counts.get((user_id, window), 0) + 1
        return count


def reset_fail_open() -> None:
    """Forget a Redis failure and the counts kept meanwhile at once (tests, or an operator who fixed Redis)."""
    global _skip_until
    _skip_until = 0.0
    with _local_lock:
        _local_counts.clear()
