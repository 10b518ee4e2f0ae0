"""The fault suite's deployment: a real uvicorn process on a seeded SQLite file, a private Redis
for the token cache (which the test kills, pauses or fills), the session Redis as Celery broker
and channel layer, and the loopback model server answering the `support` agent.

The database is migrated and seeded once per session into a template, then copied per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_process import RedisProcess
from tests.support.chat_load import LoadResult, run_load
from tests.support.fake_model_server import FakeModelServer
from tests.support.processes import ROOT, Processes, environment, login, lookups, metrics

FIGURES = ROOT / "var" / "faults.json"

# One line per request of the load would bury the figures.
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class Template:
    directory: Path
    token: str


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisProcess) -> Template:
    directory = tmp_path_factory.mktemp("faults-template")
    processes = Processes(environment(directory, redis_server.url(0), redis_server.url(1), redis_server.url(2)))
    processes.manage("migrate", "--noinput")
    processes.manage("seed_demo")
    token = processes.manage("create_api_token", "admin").strip().splitlines()[-1]
    return Template(directory, token)


@dataclass
class Deployment:
    processes: Processes
    cache: RedisProcess
    model: FakeModelServer
    token: str
    database: Path
    cookie: str = ""
    events: dict[str, float] = field(default_factory=dict)  # what was injected when (time.monotonic())

    @property
    def url(self) -> str:
        return self.processes.url("web")

    def start_web(self) -> None:
        self.processes.start_web("web")
        if not self.cookie:
            client = login(self.url)
            try:
                self.cookie = f"sessionid={client.cookies['sessionid']}"
            finally:
                client.close()

    def load_in_background(self, seconds: float, clients: int = 4) -> Callable[[], LoadResult]:
        """Start the chat load in a thread (faults are injected from the main thread); returns its join."""
        box: dict[str, LoadResult] = {}

        def run() -> None:
            box["result"] = asyncio.run(
                run_load(self.url, token=self.token, cookie=self.cookie, clients=clients, seconds=seconds)
            )

        thread = threading.Thread(target=run, name="chat-load", daemon=True)
        thread.start()

        def join() -> LoadResult:
            thread.join(timeout=seconds + 120)
            assert not thread.is_alive(), "the load did not end"
            return box["result"]

        return join

    def rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.database, timeout=30) as connection:
            return list(connection.execute(query, args))

    def unanswered(self) -> int:
        """Questions without an answer or an error answer, counted per conversation."""
        rows = self.rows(
            "SELECT SUM(role = 'user'), SUM(role = 'assistant') FROM agents_message GROUP BY conversation_id"
        )
        return sum(max(0, questions - answers) for questions, answers in rows)

    def settle(self, timeout: float = 60.0) -> int:
        """Wait for turns still running in the server to store their answer; the questions left unanswered."""
        deadline = time.monotonic() + timeout
        while (left := self.unanswered()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return left

    def answer_rows(self) -> dict[str, int]:
        rows = self.rows(
            "SELECT status, error_code, COUNT(*) FROM agents_message WHERE role = 'assistant' GROUP BY 1, 2"
        )
        return {(code or status): count for status, code, count in rows}

    def cache_lookups(self) -> dict[str, float]:
        samples = metrics(self.url)
        return {outcome: lookups(samples, outcome) for outcome in ("hit", "miss", "bypass")}

    def wait_cache_used_again(self, since: float, timeout: float = 60.0) -> float | None:
        """Seconds from `since` until a poll saw Redis lookups (hits or misses) and no bypass."""
        last = self.cache_lookups()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.cache_lookups()
            used = now["hit"] + now["miss"] > last["hit"] + last["miss"]
            if used and now["bypass"] == last["bypass"]:
                return time.monotonic() - since
            if not used:
                self.nudge()
            last = now
        return None

    def nudge(self) -> bool:
        """One JSON turn (so that the cache is looked up even when the load has ended); answered?"""
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.post(
                f"{self.url}/api/agents/support/chat",
                headers={"Authorization": f"Bearer {self.token}"},
                json={"message": "What do I do when Redis is down?"},
                timeout=30,
            )
            return response.status_code == 200
        return False

    def answering_again(self, result: LoadResult, since: float, timeout: float = 60.0) -> float:
        """Seconds from `since` to the end of the first turn answered after it: from the load, or
        from turns sent now if the load ended before (a breaker may wait its reset first)."""
        answered = [t.started + t.seconds - since for t in result.turns if t.outcome == "ok" and t.started > since]
        if answered:
            return min(answered)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nudge():
                return time.monotonic() - since
            time.sleep(0.5)
        raise AssertionError(f"no turn was answered within {timeout:.0f} s")


@pytest.fixture
def deployment_factory(
    tmp_path: Path, seeded_template: Template, redis_server: RedisProcess, redis_factory: Callable[..., RedisProcess]
) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(*, redis_options: dict[str, Any] | None = None, **env: str) -> Deployment:
        shutil.copy(seeded_template.directory / "tokencache.sqlite3", tmp_path / "tokencache.sqlite3")
        cache = redis_factory(**(redis_options or {}))
        model = FakeModelServer().start()
        model.knobs.chunk_delay_seconds = 0.02  # a streamed answer takes a few hundred ms
        processes = Processes(
            environment(
                tmp_path,
                cache.url(0),
                redis_server.url(1),
                redis_server.url(2),
                TOKENCACHE_MODEL_BREAKER_RESET_SECONDS="2",
                **env,
            )
        )
        deployment = Deployment(processes, cache, model, seeded_template.token, tmp_path / "tokencache.sqlite3")
        deployment.rows(
            "UPDATE agents_agent SET backend_kind = 'openai', backend_base_url = ?, backend_model = ?, "
            "backend_accepts_token_ids = 1 WHERE slug = 'support'",
            model.base_url,
            model.model,
        )
        made.append(deployment)
        deployment.start_web()
        return deployment

    yield make
    for deployment in made:
        deployment.processes.stop_all()
        deployment.model.stop()


def record(scenario: str, **figures: Any) -> None:
    """Print the scenario's one-line figure and keep it in var/faults.json for docs/reliability.md."""
    print(f"\n[faults] {scenario}: " + ", ".join(f"{key} {value}" for key, value in figures.items()))
    FIGURES.parent.mkdir(exist_ok=True)
    try:
        kept = json.loads(FIGURES.read_text())
    except (OSError, ValueError):
        kept = {}
    kept[scenario] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    tmp = FIGURES.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    tmp.replace(FIGURES)
