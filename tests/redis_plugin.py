"""Pytest plugin: a private Redis for the whole session, started before Django loads.

Loaded with `-p tests.redis_plugin` (see pytest.ini) so that REDIS_URL and friends
point at it before pytest-django imports the settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.redis_process import RedisProcess

_session_redis: RedisProcess | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    global _session_redis
    _session_redis = RedisProcess().start()
    os.environ["REDIS_URL"] = _session_redis.url(0)
    os.environ["CELERY_BROKER_URL"] = _session_redis.url(1)
    os.environ["CHANNELS_REDIS_URL"] = _session_redis.url(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_redis is not None:
        _session_redis.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> RedisProcess:
    assert _session_redis is not None
    return _session_redis


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: RedisProcess) -> None:
    """Every test starts from an empty Redis (all databases)."""
    redis_server.client().flushall()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisProcess]]:
    """Start extra private Redis servers that a test may kill, restart or pause."""
    started: list[RedisProcess] = []

    def start(**kwargs: object) -> RedisProcess:
        process = RedisProcess(**kwargs).start()  # type: ignore[arg-type]
        started.append(process)
        return process

    yield start
    for process in started:
        process.cleanup()
