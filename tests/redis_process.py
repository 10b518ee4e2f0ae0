"""A private redis-server on a free loopback port, started and stopped by tests.

Tests never touch a developer's own Redis: each run starts its own, and fault
tests start another one they may kill, restart or pause.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# Resolved here, in the parent: the child of a multithreaded fork may only call what is
# already loaded (dlopen there can deadlock).
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the test process dies, even by SIGKILL, so no
    Redis outlives an interrupted run. (The signal follows the thread that started the
    server, so servers are started from the main thread only.)"""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One redis-server child process; `stop()` and `start()` keep the same port."""

    def __init__(self, *, maxmemory: str = "64mb", extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.maxmemory = maxmemory
        self.extra = extra or []
        self._dir = tempfile.mkdtemp(prefix="tokencache-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def start(self) -> RedisProcess:
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it with apt")
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--maxmemory",
            self.maxmemory,
            "--maxmemory-policy",
            "allkeys-lru",
            *self.extra,
        ]
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("start test Redis servers from the main thread (see _die_with_parent)")
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def pause(self, milliseconds: int) -> None:
        """Stall every client for a while, as a saturated or swapping Redis would."""
        self.client().execute_command("CLIENT", "PAUSE", milliseconds, "ALL")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def directory(self) -> Path:
        return Path(self._dir)
