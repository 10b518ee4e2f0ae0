"""The settings every benchmark's Django runs under: its own SQLite file and Redis, nothing shared.

One place, so that a setting one benchmark needs reaches them all: bench/dashboards.py once set no
broker of its own, and seed_demo waited a broker connect timeout for each document (12 minutes).
"""

from __future__ import annotations

import os
from pathlib import Path


def bench_environment(var_dir: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """Production-like settings (DEBUG off) over `var_dir` and the Redis of `redis_url`.

    Database 0 of that server is the cache, 1 Celery's broker (saving a document queues warming
    tasks), 2 the channel layer. `extra` adds or overrides variables.
    """
    server = redis_url.rsplit("/", 1)[0]
    return {
        "DJANGO_SETTINGS_MODULE": "tokencache_project.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + os.urandom(16).hex(),
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
        "TOKENCACHE_VAR_DIR": str(var_dir),
        "DATABASE_URL": f"sqlite:///{Path(var_dir) / 'bench.sqlite3'}",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": f"{server}/1",
        "CHANNELS_REDIS_URL": f"{server}/2",
        "TOKENCACHE_DEMO_PASSWORD": "bench-" + os.urandom(8).hex(),
        "TOKENCACHE_CHAT_RATE_PER_MINUTE": "1000000",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
