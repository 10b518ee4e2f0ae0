"""Liveness and readiness: the site keeps serving while Redis is down."""

import pytest
from django.test import Client, override_settings

from tests.redis_process import RedisProcess


def test_healthz_answers_while_the_process_runs(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_every_dependency_ok(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "celery_broker": "ok"},
    }


@pytest.mark.django_db
def test_readyz_degrades_but_stays_ready_when_redis_is_down(client: Client, redis_factory) -> None:
    doomed: RedisProcess = redis_factory()
    doomed.stop()
    with override_settings(REDIS_URL=doomed.url(0), CELERY_BROKER_URL=doomed.url(1)):
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "error: ConnectionError"
    assert body["checks"]["celery_broker"] == "error: ConnectionError"
    assert str(doomed.port) not in response.content.decode()  # details go to the log, not to the public


def test_metrics_exports_django_request_counters(client: Client) -> None:
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total" in response.content


@pytest.mark.django_db
def test_readyz_checks_a_non_redis_broker_through_celery_transports(client: Client) -> None:
    from tests.redis_process import free_port

    with override_settings(CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//"):
        body = client.get("/readyz").json()
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["celery_broker"].startswith("error: ")
    assert body["status"] == "degraded"


@pytest.mark.django_db
def test_pages_keep_serving_while_redis_is_down(client: Client, root, redis_factory) -> None:
    from django.conf import settings

    doomed: RedisProcess = redis_factory()
    doomed.stop()
    dead_caches = {alias: {**config, "LOCATION": doomed.url(0)} for alias, config in settings.CACHES.items()}
    client.force_login(root)
    with override_settings(CACHES=dead_caches, REDIS_URL=doomed.url(0), CELERY_BROKER_URL=doomed.url(1)):
        assert client.get("/healthz").status_code == 200
        assert client.get("/admin/").status_code == 200
        assert client.get("/admin/agents/ttlpolicy/").status_code == 200
        assert client.get("/").status_code == 200
