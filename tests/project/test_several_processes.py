"""Several processes on one database and one Redis deployment, as docs/deploy.md lays out.

Two web servers (uvicorn, one process each) and two Celery workers (solo pool), all on one
SQLite file and one Redis Cluster (broker and channel layer on a Redis of their own, which a
cluster cannot carry), sharing one PROMETHEUS_MULTIPROC_DIR as processes of one machine do:
- single-flight holds across all four: chat turns on both web servers and warming tasks on
  both workers look up the same chunks at once, and every entry Redis holds afterwards was
  counted as a miss exactly once (a second tokenization of a text is a second miss);
- every process's breaker is in the admin, and each web server's /metrics shows the same
  merged totals, with every process's breaker gauge;
- a websocket on one web server keeps answering while the other is restarted.
And a chat load on a web server while a cluster primary is killed: every turn answered (the
bypass counted in /metrics), the replica takes over, hits resume, nothing restarted.
Run by `make test-cluster` (the `cluster` marker).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from cachecore.breaker import Breaker
from cachecore.store import TokenStore
from tests.conftest import PASSWORD
from tests.redis_cluster import ClusterDeployment
from tests.redis_process import RedisProcess, free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QUESTIONS = [
    "What do I do when Redis is down?",
    "How do I reset a password?",
    "How long is the refund window?",
    "How do I export my data?",
]


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


def _environment(tmp_path: Path, cluster: ClusterDeployment, broker: RedisProcess, **extra: str) -> dict[str, str]:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'tokencache.sqlite3'}",
        TOKENCACHE_VAR_DIR=str(tmp_path),
        REDIS_URL=cluster.url(),
        CELERY_BROKER_URL=broker.url(1),
        CHANNELS_REDIS_URL=broker.url(2),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        TOKENCACHE_DEMO_PASSWORD=PASSWORD,
        TOKENCACHE_CHAT_RATE_PER_MINUTE="10000",
        LOG_LEVEL="WARNING",
        DEBUG="1",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


@pytest.fixture
def deployment(
    tmp_path: Path, redis_cluster: ClusterDeployment, redis_server: RedisProcess
) -> Iterator[tuple[Processes, ClusterDeployment]]:
    redis_cluster.flush()
    processes = Processes(_environment(tmp_path, redis_cluster, redis_server))
    try:
        yield processes, redis_cluster
    finally:
        processes.stop_all()


def _sqlite(processes: Processes, query: str) -> list[tuple[object, ...]]:
    path = processes.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return list(connection.execute(query))


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The token cache's samples in `url`'s /metrics (the HTTP ones change with every scrape)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("tokencache_"):
                continue
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _lookups(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "tokencache_lookups_total" and ("outcome", outcome) in labels
    )


def _quiet(broker: RedisProcess, timeout: float = 90.0) -> None:
    """Until no task is queued and no worker is running one (asked through Celery's control)."""
    from tokencache_project.celery import app

    client = broker.client(1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not client.llen("celery"):
            active = app.control.inspect(timeout=1.0).active() or {}
            if len(active) == 2 and not any(active.values()) and not client.llen("celery"):
                return
        time.sleep(0.25)
    raise AssertionError("the workers did not finish within the timeout")


def _workers_ready(timeout: float = 60.0) -> None:
    from tokencache_project.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.inspect(timeout=1.0).ping() or {}) == 2:
            return
    raise AssertionError("the workers did not start")


def _turn(url: str, token: str, question: str) -> None:
    response = httpx.post(
        f"{url}/api/agents/support/chat",
        headers={"Authorization": f"Bearer {token}"},
        json={"message": question},
        timeout=60,
    )
    assert response.status_code == 200, response.text


def _login(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=20)
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/?next=/admin/",
        data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]},
        headers={"Referer": f"{url}/admin/login/"},
    )
    assert response.status_code in (200, 302) and "sessionid" in client.cookies, response.text[:500]
    return client


def test_two_web_servers_and_two_workers_share_one_cache_correctly(
    deployment: tuple[Processes, ClusterDeployment], redis_server: RedisProcess
) -> None:
    processes, cluster = deployment
    processes.manage("migrate", "--noinput")
    processes.manage("seed_demo")
    token = processes.manage("create_api_token", "support").strip().splitlines()[-1]
    # A cold cache and an empty queue (seed_demo queued warming tasks), then every process
    # looks up the same chunks at once.
    redis_server.client(1).flushdb()
    cluster.flush()
    for name in ("web-a", "web-b"):
        processes.start_web(name)
    for name in ("worker-1", "worker-2"):
        processes.start_worker(name)
    _workers_ready()
    store = TokenStore.from_url(cluster.url(), breaker=Breaker(name="observer"))
    before = _metrics(processes.url("web-a"))
    documents = [row[0] for row in _sqlite(processes, "SELECT id FROM agents_knowledgedocument")]
    from tokencache_project.celery import app

    turns = [
        threading.Thread(target=_turn, args=(processes.url(web), token, question))
        for question in QUESTIONS
        for web in ("web-a", "web-b")
    ]
    for thread in turns:
        thread.start()
    for _ in range(2):  # each document twice: both workers warm the same chunks
        for document in documents:
            app.send_task("agents.refresh_document", args=[document])
    for thread in turns:
        thread.join(timeout=120)
    _quiet(redis_server)

    after = _metrics(processes.url("web-a"))
    usage = store.usage(max_keys=10**9)
    assert usage is not None and usage.entries > 0
    missed = (
        _lookups(after, "miss") + _lookups(after, "corrupt") - _lookups(before, "miss") - _lookups(before, "corrupt")
    )
    assert _lookups(after, "bypass") == _lookups(before, "bypass")
    assert missed == usage.entries, "a text was tokenized by two processes (or one value was not written)"
    assert _lookups(after, "hit") > _lookups(before, "hit")
    hits = _lookups(after, "hit") - _lookups(before, "hit")
    print(f"four processes at once: {usage.entries} entries, {missed:.0f} misses, {hits:.0f} hits")

    # /metrics merges every process of the machine: both web servers say the same, and every
    # process's breaker gauge is there.
    pids = [process.pid for process in processes.running.values()]
    assert _metrics(processes.url("web-b")) == _metrics(processes.url("web-a"))
    gauges = [labels for (name, labels), _ in after.items() if name == "tokencache_breaker_state"]
    for pid in pids:
        assert any(value.endswith(f":{pid}") for labels in gauges for _, value in labels), pid

    # The admin lists every process's breaker.
    admin = _login(processes.url("web-b"))
    try:
        page = admin.get("/admin/cachecore/breakerprocess/").text
        cookie = f"sessionid={admin.cookies['sessionid']}"
    finally:
        admin.close()
    rows = _sqlite(processes, "SELECT pid, role FROM cachecore_breakerprocess")
    assert sorted(role for pid, role in rows if pid in pids) == ["web", "web", "worker", "worker"]
    for pid in pids:
        assert re.search(rf"\b{pid}\b", page), f"process {pid} is not in the admin"

    # A websocket on web-a keeps answering while web-b restarts.
    async def chat_while_b_restarts() -> list[str]:
        outcomes = []
        async with websockets.connect(
            f"ws://127.0.0.1:{processes.web_ports['web-a']}/ws/agents/support/",
            origin=processes.url("web-a"),
            additional_headers={"Cookie": cookie},
        ) as ws:
            for step in range(3):
                if step == 1:
                    await asyncio.to_thread(processes.stop, "web-b")
                if step == 2:
                    await asyncio.to_thread(processes.start_web, "web-b")
                await ws.send(json.dumps({"type": "message", "message": QUESTIONS[step]}))
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] in ("done", "error"):
                        outcomes.append(frame["type"])
                        break
        return outcomes

    assert asyncio.run(chat_while_b_restarts()) == ["done", "done", "done"]
    _turn(processes.url("web-b"), token, QUESTIONS[0])  # the restarted server serves again


def test_chat_turns_are_all_answered_while_a_cluster_primary_is_killed_and_replaced(
    tmp_path: Path, cluster_factory: Callable[[], ClusterDeployment], redis_server: RedisProcess
) -> None:
    cluster = cluster_factory()
    processes = Processes(_environment(tmp_path, cluster, redis_server, TOKENCACHE_BREAKER_RESET_SECONDS="1"))
    try:
        processes.manage("migrate", "--noinput")
        processes.manage("seed_demo")
        token = processes.manage("create_api_token", "support").strip().splitlines()[-1]
        processes.start_web("web")
        url = processes.url("web")
        for question in QUESTIONS:
            _turn(url, token, question)  # every chunk these questions retrieve is cached now

        answered: list[int] = []
        stop = threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                response = httpx.post(
                    f"{url}/api/agents/support/chat",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"message": QUESTIONS[n % len(QUESTIONS)]},
                    timeout=60,
                )
                answered.append(response.status_code)
                n += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            before = _metrics(url)
            cluster.primaries()[0].kill()
            killed_at = time.monotonic()
            resumed = None
            last = before
            while time.monotonic() - killed_at < 30:
                time.sleep(1.0)
                now = _metrics(url)
                if (
                    _lookups(now, "bypass") > _lookups(before, "bypass")  # the kill was felt
                    and _lookups(now, "bypass") == _lookups(last, "bypass")  # no bypass for a second
                    and _lookups(now, "hit") > _lookups(last, "hit")  # and hits meanwhile
                ):
                    resumed = time.monotonic() - killed_at
                    break
                last = now
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=90)
        assert answered and set(answered) == {200}, sorted(set(answered))
        assert resumed is not None, "hits did not resume within 30 s"
        bypassed = _lookups(_metrics(url), "bypass") - _lookups(before, "bypass")
        print(f"chat under a primary kill: {len(answered)} turns, all 200; {bypassed:.0f} chunks bypassed; ", end="")
        print(f"hits only again within {resumed:.1f} s")
    finally:
        processes.stop_all()
