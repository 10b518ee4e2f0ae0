"""Django's own cache degrades like the token cache: Redis down means a miss, not an error."""

from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from tests.redis_process import RedisProcess


def test_the_default_cache_misses_instead_of_raising_while_redis_is_down(redis_factory) -> None:
    doomed: RedisProcess = redis_factory()
    doomed.stop()
    dead = {**settings.CACHES["default"], "LOCATION": doomed.url(0)}
    with override_settings(CACHES={**settings.CACHES, "default": dead}):
        cache = caches["default"]
        cache.set("greeting", "hello")
        assert cache.get("greeting", default="missed") == "missed"


def test_the_token_cache_alias_still_raises_so_its_breaker_sees_failures() -> None:
    assert settings.CACHES["tokens"]["OPTIONS"]["IGNORE_EXCEPTIONS"] is False
