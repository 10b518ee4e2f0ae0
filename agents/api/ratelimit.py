"""Per-user rate limit on chat turns, shared by every interface, kept in Redis.

A fixed one-minute window per user (`INCR` + `EXPIRE` in one round trip): every web
process sees the same count, and a burst at a window edge can reach at most twice the
limit, which is fine for a fairness limit (it guards the model server, not a bill).

Redis trouble must never stop chat (design invariant 4): the limiter has its own client
with short timeouts, fails open, logs once, and skips Redis for a cool-down so a dead
or paused Redis costs no request more than one short timeout.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from django.conf import settings

from agents.api.errors import ApiError

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 0.25
COOL_DOWN_SECONDS = 10.0
WINDOW_SECONDS = 60

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}
_skip_until = 0.0


def _client() -> redis.Redis:
    url = settings.REDIS_URL
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=TIMEOUT_SECONDS,
                socket_timeout=TIMEOUT_SECONDS,
                max_connections=settings.TOKENCACHE_POOL_SIZE,
            )
            _clients[url] = client
        return client


def check_chat_rate(user_id: int) -> None:
    """Count one chat turn for the user; raise a 429 `ApiError` past the limit. Never raises for Redis."""
    global _skip_until
    limit = settings.TOKENCACHE_CHAT_RATE_PER_MINUTE
    if limit <= 0:
        return
    now = time.time()
    if now < _skip_until:
        return
    window = int(now // WINDOW_SECONDS)
    key = f"tc:rl:chat:{user_id}:{window}"
    try:
        pipe = _client().pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, WINDOW_SECONDS + 5)
        count = int(pipe.execute()[0])
    except (redis.RedisError, OSError) as error:
        _skip_until = time.time() + COOL_DOWN_SECONDS
        logger.warning(
            "chat_rate_limit_unavailable",
            extra={"error": repr(error), "fail_open_seconds": COOL_DOWN_SECONDS},
        )
        return
    if count > limit:
        retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
        raise ApiError(
            429,
            "rate_limited",
            f"More than {limit} chat turns in a minute; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def reset_fail_open() -> None:
    """Forget a Redis failure at once (tests, or an operator who fixed Redis)."""
    global _skip_until
    _skip_until = 0.0
