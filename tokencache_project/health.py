"""Liveness and readiness probes.

/healthz says the process answers. /readyz checks each dependency with short
timeouts; only a dead database makes it 503, because without Redis or the broker
Tokencache still serves (the token cache bypasses, chat keeps answering).
"""

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from cachecore.redis_clients import make_client

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 1.0


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _ping(url: str) -> None:
    # One server, a cluster (any node answers) or Sentinel's current primary.
    client = make_client(url, pool_size=1, connect_timeout=PROBE_TIMEOUT_SECONDS, read_timeout=PROBE_TIMEOUT_SECONDS)
    try:
        client.ping()
    finally:
        client.close()


def _check_broker(url: str) -> None:
    if url.startswith(("redis://", "rediss://", "unix://")):
        _ping(url)
        return
    # Any other broker (Sentinel, AMQP, SQS, ...) through Celery's own transport layer.
    from kombu import Connection

    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
    with Connection(url, connect_timeout=PROBE_TIMEOUT_SECONDS, transport_options=options) as broker:
        broker.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)


def _status(name: str, check: Callable[[], None]) -> str:
    try:
        check()
    except Exception as exc:  # a probe reports every failure, whatever its kind
        # The probe is public: the error's class is enough to act on; its text (hosts,
        # user names in a database error) goes to the log only.
        logger.warning("readiness check %s failed: %s", name, exc, extra={"event": "readyz_failed", "check": name})
        return f"error: {type(exc).__name__}"
    return "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {
        "database": _status("database", _check_database),
        "redis": _status("redis", lambda: _ping(settings.REDIS_URL)),
        "celery_broker": _status("celery_broker", lambda: _check_broker(settings.CELERY_BROKER_URL)),
    }
    ready = checks["database"] == "ok"
    degraded = any(value != "ok" for value in checks.values())
    status = "ok" if not degraded else ("degraded" if ready else "unavailable")
    return JsonResponse({"status": status, "checks": checks}, status=200 if ready else 503)
