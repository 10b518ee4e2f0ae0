"""Concurrent writers on a file SQLite database wait for each other instead of failing.

A transaction that reads first and then writes (an admin save, `update_or_create`) starts,
under SQLite's default DEFERRED mode, as a reader; when another connection has written in
the meantime its upgrade to a writer is refused at once with "database is locked", whatever
the busy timeout. Immediate transactions take the write lock at BEGIN, where the busy timeout
applies, so every writer waits its turn.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Threads of one process, each with its own Django connection, all against one file database,
# configured exactly as settings.py configures SQLite (DATABASE_URL points at a scratch file).
WRITERS = r"""
import json, sys, threading
import django
django.setup()
from django.db import OperationalError, connection, transaction

threads, per_thread = int(sys.argv[1]), int(sys.argv[2])
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    cursor.execute("INSERT OR IGNORE INTO counter VALUES ('saves', 0)")
start = threading.Barrier(threads)
errors = []

def writer():
    start.wait()
    for _ in range(per_thread):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # Read, then write: the shape of update_or_create and of an admin save.
                cursor.execute("SELECT value FROM counter WHERE name = 'saves'")
                value = cursor.fetchone()[0]
                cursor.execute("UPDATE counter SET value = %s WHERE name = 'saves'", [value + 1])
        except OperationalError as error:
            errors.append(str(error))
    connection.close()

workers = [threading.Thread(target=writer) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT value FROM counter WHERE name = 'saves'")
    saved = cursor.fetchone()[0]
print(json.dumps({"errors": errors, "saved": saved, "mode": connection.transaction_mode}))
"""


def _run_writers(database: Path, *, threads: int, per_thread: int) -> dict[str, object]:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    env["DJANGO_SETTINGS_MODULE"] = "tokencache_project.settings"
    result = subprocess.run(
        [sys.executable, "-c", WRITERS, str(threads), str(per_thread)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_it_makes_concurrent_read_then_write_transactions_wait_instead_of_failing(tmp_path: Path) -> None:
    outcome = _run_writers(tmp_path / "writers.sqlite3", threads=8, per_thread=60)
    assert outcome["mode"] == "IMMEDIATE"
    assert outcome["errors"] == []
    assert outcome["saved"] == 8 * 60  # no lost update either
