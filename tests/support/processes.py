"""Real processes of the app for tests: uvicorn and Celery workers on a file database.

Shared by tests/project/test_several_processes.py (`cluster`) and tests/faults/ (`faults`):
`environment()` is the environment of a deployment on one SQLite file and the given Redis
URLs, `Processes` starts and stops its processes, and the helpers read its database and
its /metrics as an operator would.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PASSWORD
from tests.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class Processes:
    """The processes of the deployment, started and stopped by the test (SIGTERM, then SIGKILL)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.web_ports: dict[str, int] = {}

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start_web(self, name: str) -> None:
        port = self.web_ports.setdefault(name, free_port())
        self.running[name] = subprocess.Popen(
            [
                *(
                    str(BIN / "uvicorn"),
                    "tokencache_project.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ),
                *("--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url(name)}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"web server {name} did not start")

    def start_worker(self, name: str) -> None:
        self.running[name] = subprocess.Popen(
            [
                *(
                    str(BIN / "celery"),
                    "-A",
                    "tokencache_project",
                    "worker",
                    "--pool",
                    "solo",
                    "-n",
                    f"{name}@127.0.0.1",
                ),
                *("--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            cwd=ROOT,
            env={**self.env, "TOKENCACHE_PROCESS_ROLE": "worker"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.web_ports[name]}"

    def stop(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def environment(tmp_path: Path, redis_url: str, broker_url: str, channels_url: str, **extra: str) -> dict[str, str]:
    """The environment of a deployment on one SQLite file in `tmp_path` and the given Redis URLs."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'tokencache.sqlite3'}",
        TOKENCACHE_VAR_DIR=str(tmp_path),
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=broker_url,
        CHANNELS_REDIS_URL=channels_url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        TOKENCACHE_DEMO_PASSWORD=PASSWORD,
        TOKENCACHE_CHAT_RATE_PER_MINUTE="10000",
        LOG_LEVEL="WARNING",
        DEBUG="1",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def sqlite_rows(processes: Processes, query: str) -> list[tuple[object, ...]]:
    path = processes.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return list(connection.execute(query))


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The token cache's samples in `url`'s /metrics (the HTTP ones change with every scrape)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("tokencache_"):
                continue
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def lookups(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "tokencache_lookups_total" and ("outcome", outcome) in labels
    )


def login(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=20)
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/?next=/admin/",
        data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{url}/admin/login/"},
    )
    assert response.status_code in (200, 302) and "sessionid" in client.cookies, response.text[:500]
    return client
