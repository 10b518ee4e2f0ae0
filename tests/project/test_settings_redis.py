"""REDIS_URL alone moves Tokencache onto Sentinel or a cluster; what a cluster cannot carry is refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SHOW = (
    "import json, django; from django.conf import settings as s; django.setup(); print(json.dumps({"
    "'broker': s.CELERY_BROKER_URL, 'options': s.CELERY_BROKER_TRANSPORT_OPTIONS,"
    "'channels': s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0],"
    "'location': s.CACHES['tokens']['LOCATION'], 'client': s.CACHES['default']['OPTIONS']['CLIENT_CLASS'],"
    "'factory': s.CACHES['tokens']['OPTIONS'].get('CONNECTION_FACTORY')}))"
)


def _settings(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "CHANNELS_REDIS_URL")
    }
    environment.update(env, DJANGO_SETTINGS_MODULE="tokencache_project.settings", LOG_LEVEL="ERROR")
    return subprocess.run(
        [sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def test_a_sentinel_url_moves_both_caches_the_broker_and_the_channel_layer() -> None:
    result = _settings(REDIS_URL="redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/tc/0")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.splitlines()[-1])
    assert shown["broker"] == "sentinel://10.0.0.1:26379/1;sentinel://10.0.0.2:26379/1"
    assert shown["options"]["master_name"] == "tc"
    assert shown["channels"] == {"sentinels": [["10.0.0.1", 26379], ["10.0.0.2", 26379]], "master_name": "tc", "db": 2}
    assert (shown["location"], shown["client"]) == ("redis://tc/0", "django_redis.client.SentinelClient")


def test_a_cluster_url_needs_the_broker_and_channel_layer_elsewhere() -> None:
    refused = _settings(REDIS_URL="redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    assert refused.returncode != 0 and "CELERY_BROKER_URL must be set" in refused.stderr
    accepted = _settings(
        REDIS_URL="redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
        CELERY_BROKER_URL="amqp://guest@10.0.0.9//",
        CHANNELS_REDIS_URL="redis://10.0.0.8:6379/2",
    )
    assert accepted.returncode == 0, accepted.stderr
    shown = json.loads(accepted.stdout.splitlines()[-1])
    assert shown["location"] == ["redis+cluster://10.0.0.1:7000,10.0.0.2:7000"]
    assert shown["factory"] == "cachecore.django_redis_cluster.ClusterConnectionFactory"
    assert shown["broker"] == "amqp://guest@10.0.0.9//"


def test_a_cluster_url_as_the_broker_is_refused_at_start_up() -> None:
    result = _settings(CELERY_BROKER_URL="redis+cluster://10.0.0.1:7000")
    assert result.returncode != 0 and "Celery's broker cannot use Redis Cluster" in result.stderr
