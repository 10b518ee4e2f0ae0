"""A Tokencache process that uses every Redis client once a round: run with REDIS_URL set.

Each round (one per line read on stdin) retries for up to `--patience` seconds until
Django's cache, the token store, the rate limiter's client, Celery's broker and the
channel layer all work, then prints one JSON line: what worked, how long it took and
which lookups were bypassed meanwhile. Used by tests/test_sentinel_failover.py to show
that one process follows a primary that Sentinel fails over, without a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial

import django


def _cache(n: int) -> None:
    from django.core.cache import cache

    cache.set("probe", n, timeout=60)
    if cache.get("probe") != n:  # IGNORE_EXCEPTIONS: a failure reads as a miss
        raise RuntimeError("Django's cache did not keep the value")


_store = None


def _tokens(n: int, bypassed: list[int]) -> None:
    # The client default_store() uses (django-redis's `tokens` alias), without its database
    # recorder: this process has no migrated database.
    global _store
    from django_redis import get_redis_connection

    from cachecore.breaker import Breaker
    from cachecore.store import Outcome, TokenStore
    from cachecore.tokenizers import get_tokenizer

    if _store is None:
        _store = TokenStore(get_redis_connection("tokens"), breaker=Breaker(name="probe", fail_max=3, reset_seconds=1))
    batch = _store.get_many(get_tokenizer("tiktoken:cl100k_base"), [f"probe text {i}" for i in range(8)], ttl=600)
    if Outcome.BYPASS in batch.outcomes:
        bypassed.append(batch.bypassed)
        raise RuntimeError("the token cache bypassed")


def _rate_limiter(n: int) -> None:
    from agents.ratelimit import _limiter

    _limiter().client.set("probe-rate", n, ex=60)


def _broker(n: int) -> None:
    from tokencache_project.celery import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=1)
        queue = connection.SimpleQueue("tokencache-probe")
        try:
            queue.put({"n": n})
            message = queue.get(timeout=2)
            message.ack()
            if message.payload != {"n": n}:
                raise RuntimeError(f"broker returned {message.payload!r}")
        finally:
            queue.close()


def _channels(n: int) -> None:
    from channels.layers import get_channel_layer

    async def exchange() -> None:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "probe", "n": n})
        received = await asyncio.wait_for(layer.receive(channel), 2)
        if received.get("n") != n:
            raise RuntimeError(f"channel layer returned {received!r}")
        await layer.close_pools()

    asyncio.run(exchange())


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokencache_project.settings")
    django.setup()
    patience = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    for n, _line in enumerate(sys.stdin):
        started = time.monotonic()
        bypassed: list[int] = []
        done: dict[str, float] = {}
        errors: dict[str, str] = {}
        checks: dict[str, Callable[[], None]] = {
            "cache": partial(_cache, n),
            "tokens": partial(_tokens, n, bypassed),
            "rate_limiter": partial(_rate_limiter, n),
            "broker": partial(_broker, n),
            "channels": partial(_channels, n),
        }
        while len(done) < len(checks) and time.monotonic() - started < patience:
            for name, check in checks.items():
                if name in done:
                    continue
                try:
                    check()
                except Exception as exc:
                    errors[name] = f"{type(exc).__name__}: {exc}"
                else:
                    done[name] = round(time.monotonic() - started, 2)
            if len(done) < len(checks):
                time.sleep(0.2)
        print(json.dumps({"round": n, "done": done, "errors": errors, "bypassed": sum(bypassed)}), flush=True)


if __name__ == "__main__":
    main()
