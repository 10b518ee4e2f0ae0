"""A real Celery worker of the project's app starts against the broker and answers a ping."""

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.redis_process import RedisProcess
from tokencache_project.celery import app

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_started_like_make_run_answers_ping(redis_server: RedisProcess) -> None:
    assert app.conf.broker_url == redis_server.url(1)  # the test Redis, as settings read it
    env = {**os.environ, "TOKENCACHE_PROCESS_ROLE": "worker", "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tokencache_project", "worker", "--pool", "solo", "--hostname",
         "ping-test@%h", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        replies: list[dict[str, object]] = []
        while not replies and time.monotonic() < deadline and worker.poll() is None:
            replies = app.control.ping(timeout=1.0) or []
        assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
        pongs = {name: answer for reply in replies for name, answer in reply.items()}
        assert [answer for name, answer in pongs.items() if name.startswith("ping-test@")] == [{"ok": "pong"}]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
