"""Liveness and readiness: the site keeps serving while Redis is down."""

import ipaddress

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


@pytest.mark.parametrize(
    ("address", "allow", "status"),
    [
        ("203.0.113.7", None, 403),  # by default only this machine may read them
        ("::1", None, 200),
        ("::ffff:127.0.0.1", None, 200),  # IPv4 loopback, as a server bound to :: sees it
        ("203.0.113.7", "127.0.0.1,203.0.113.0/24", 200),  # the monitoring network, once configured
        ("198.51.100.1", "127.0.0.1,203.0.113.0/24", 403),
    ],
)
def test_metrics_are_for_the_monitoring_network_only(
    client: Client, settings, address: str, allow: str | None, status: int
) -> None:
    if allow is not None:
        settings.TOKENCACHE_METRICS_ALLOW = [ipaddress.ip_network(item) for item in allow.split(",")]
    response = client.get("/metrics", REMOTE_ADDR=address)
    assert response.status_code == status
    assert (b"django_http_requests_total" in response.content) is (status == 200)


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
