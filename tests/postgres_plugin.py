"""Pytest plugin: with TOKENCACHE_TEST_POSTGRES=1, a private PostgreSQL for the whole session.

Loaded with `-p tests.postgres_plugin` (see pytest.ini). Without the variable it does
nothing and the suite runs on SQLite. With it, before pytest-django imports the settings,
it initialises a throw-away cluster in a temporary directory, starts it on a free port
of 127.0.0.1 only (no Unix socket, password authentication, fsync off: the data is
discarded anyway) and points DATABASE_URL at it, so pytest-django creates its test
database there: the production settings path ("settings change; code does not").

The tests connect as `tokencache`, an ordinary role that may create databases but is no
superuser, as an application's role would be in production, so a migration that needs
more privileges fails here too.

The cluster is stopped and its directory deleted in pytest_unconfigure (after a pass, a
failure or Ctrl-C). A watchdog process does the same if pytest dies without reaching it
(SIGTERM from a CI runner, SIGKILL): it waits for pytest's end of a pipe to close.
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ENABLE_VARIABLE = "TOKENCACHE_TEST_POSTGRES"
APP_ROLE = "tokencache"
APP_DATABASE = "tokencache"
START_TIMEOUT_SECONDS = 30


def bin_dir() -> Path:
    """The directory of initdb, pg_ctl and postgres: on PATH, else Debian's newest install."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # a symlink in /usr/local/bin points at the real bin directory
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3].split(".")[0])
    )
    if not found:
        raise RuntimeError(
            f"{ENABLE_VARIABLE}=1 needs the PostgreSQL server (initdb): run `make test-postgres`, "
            "which installs it with apt (scripts/bootstrap.sh postgres)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _stop_and_remove(bindir: Path, root: Path) -> None:
    """Stop the server (immediately: its data is thrown away) and delete its directory."""
    data = root / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w", "-t", "20"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
    shutil.rmtree(root, ignore_errors=True)


class PostgresCluster:
    """A private cluster in a temporary directory; `cleanup()` stops it and deletes the directory."""

    def __init__(self) -> None:
        self.bindir = bin_dir()
        self.port = _free_port()
        self.password = secrets.token_urlsafe(24)
        self.root = Path(tempfile.mkdtemp(prefix="tokencache-postgres-"))
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgres://{APP_ROLE}:{self.password}@127.0.0.1:{self.port}/{APP_DATABASE}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def start(self) -> PostgresCluster:
        try:
            self._start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start(self) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, __file__, "watch", str(self.bindir), str(self.root)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which cleans up; not this
        )
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            import pwd

            server_user = pwd.getpwnam("postgres")
            for path in (self.root, password_file):
                os.chown(path, server_user.pw_uid, server_user.pw_gid)
        data = self.root / "data"
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(data),
            "--username",
            "postgres",
            "--pwfile",
            str(password_file),
            "--auth",
            "scram-sha-256",
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--no-sync",
        )
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
        self._run(
            str(self.bindir / "pg_ctl"),
            "start",
            "--pgdata",
            str(data),
            "--log",
            str(self.log),
            "--wait",
            "--timeout",
            str(START_TIMEOUT_SECONDS),
            "--options",
            " ".join(options),
        )
        self._create_application_role()

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            _as_server_user(list(args)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT_SECONDS + 10,
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({result.returncode}):\n{result.stdout.decode(errors='replace')}\n{log}"
            )

    def _create_application_role(self) -> None:
        import psycopg
        from psycopg import sql

        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                connection = psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="postgres",
                    password=self.password,
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=5,
                )
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with connection:
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(self.password)
                )
            )
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE))
            )

    def cleanup(self) -> None:
        _stop_and_remove(self.bindir, self.root)
        if self._watchdog is not None:
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.close()  # nothing left to do: it exits at once
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None


_session_postgres: PostgresCluster | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    global _session_postgres
    if os.environ.get(ENABLE_VARIABLE) != "1":
        return
    _session_postgres = PostgresCluster().start()
    os.environ["DATABASE_URL"] = _session_postgres.url
    # pytest-django drops the test database at the end, which PostgreSQL refuses while the server
    # threads of earlier tests (HTTP, turn and websocket pools) still hold connections: close each
    # after use, as production does behind PgBouncer in transaction mode.
    os.environ["DATABASE_CONN_MAX_AGE"] = "0"


def pytest_report_header(config: pytest.Config) -> str | None:
    if _session_postgres is None:
        return None
    return f"database: a private PostgreSQL ({_session_postgres.bindir}) on 127.0.0.1:{_session_postgres.port}"


def pytest_unconfigure(config: pytest.Config) -> None:
    global _session_postgres
    if _session_postgres is not None:
        _skip_the_breaker_row_delete_at_exit()
        _session_postgres.cleanup()
        _session_postgres = None


def _skip_the_breaker_row_delete_at_exit() -> None:
    """cachecore deletes this process's breaker row at interpreter exit (atexit). Here that row
    lived in the test database, which pytest-django has dropped, on a server about to stop: the
    delete could only fail, and log the failure to an output pytest has already closed."""
    forget = getattr(sys.modules.get("cachecore.store.default"), "_forget_at_exit", None)
    if forget is not None:
        atexit.unregister(forget)


def _watch(bindir: str, root: str) -> None:
    """Block until the parent's pipe closes (pytest ended, however), then clean up after it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()
    if Path(root).exists():
        _stop_and_remove(Path(bindir), Path(root))


if __name__ == "__main__" and sys.argv[1:2] == ["watch"]:
    _watch(sys.argv[2], sys.argv[3])
