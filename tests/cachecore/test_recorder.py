"""Every process's breaker state in the database: written on each change, gone with the process."""

import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import OperationalError

from cachecore.breaker import Breaker, BreakerEvent, State, gauge_and_log
from cachecore.models import BreakerProcess
from cachecore.process import ProcessIdentity
from cachecore.recorder import DatabaseRecorder
from cachecore.store.default import _forget_at_exit
from tests.support.clock import FakeClock


@pytest.mark.django_db(transaction=True)
def test_every_state_change_sets_the_gauge_and_the_process_row(clock: FakeClock) -> None:
    from prometheus_client import REGISTRY
    from redis.exceptions import TimeoutError

    identity = ProcessIdentity(host="worker-host", pid=4242, role="worker")
    recorder = DatabaseRecorder(identity)
    breaker = Breaker(
        name="unit", fail_max=2, reset_seconds=60, listeners=[gauge_and_log(identity), recorder], clock=clock
    )
    recorder.register(breaker)
    for _ in range(2):
        with pytest.raises(TimeoutError), breaker.guard():
            raise TimeoutError("stalled")
    recorder.flush()
    row = BreakerProcess.objects.get(host="worker-host", pid=4242)
    assert (row.role, row.state, row.consecutive_failures) == ("worker", "open", 2)
    gauge = REGISTRY.get_sample_value("tokencache_breaker_state", {"process": identity.label})
    assert gauge == 2

    clock.advance(60)
    with breaker.guard():
        pass
    recorder.flush()
    assert BreakerProcess.objects.get(host="worker-host", pid=4242).state == "closed"
    assert REGISTRY.get_sample_value("tokencache_breaker_state", {"process": identity.label}) == 0


def _exited_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


@pytest.mark.django_db(transaction=True)
def test_registering_prunes_the_old_rows_of_dead_processes_on_this_host() -> None:
    identity = ProcessIdentity.current("web")
    long_ago = datetime.now(UTC) - DatabaseRecorder.PRUNE_AFTER - timedelta(minutes=1)
    dead, dead_just_now, alive = _exited_pid(), _exited_pid(), os.getppid()
    for host, pid, last_seen in [
        (identity.host, dead, long_ago),  # pruned
        (identity.host, alive, long_ago),  # its process still runs
        ("another-host", dead, long_ago),  # its pids cannot be checked from here
        (identity.host, dead_just_now, datetime.now(UTC)),  # too recent to judge
    ]:
        BreakerProcess.objects.create(
            host=host, pid=pid, role="web", state="closed", last_change=long_ago, last_seen=last_seen
        )
    kept_before = set(BreakerProcess.objects.exclude(host=identity.host, pid=dead).values_list("host", "pid"))

    recorder = DatabaseRecorder(identity)
    recorder.register(Breaker(name="unit"))
    recorder.flush()

    rows = set(BreakerProcess.objects.values_list("host", "pid"))
    assert (identity.host, dead) not in rows
    assert rows == kept_before | {(identity.host, identity.pid)}


@pytest.mark.django_db(transaction=True)
def test_an_exiting_process_deletes_its_row_and_its_live_gauge_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    recorder = DatabaseRecorder(ProcessIdentity.current("web"))
    recorder.register(Breaker(name="unit"))
    recorder.flush()
    ours = tmp_path / f"gauge_livemostrecent_{os.getpid()}.db"
    others = tmp_path / f"gauge_livemostrecent_{os.getppid()}.db"
    ours.touch()
    others.touch()

    _forget_at_exit(recorder)

    assert not BreakerProcess.objects.filter(pid=os.getpid()).exists()
    assert not ours.exists() and others.exists()


@pytest.mark.django_db(transaction=True)
def test_a_forked_child_exiting_leaves_its_parents_row_alone() -> None:
    parent = DatabaseRecorder(ProcessIdentity(host=socket.gethostname(), pid=os.getppid(), role="web"))
    parent.register(Breaker(name="unit"))
    parent.flush()
    _forget_at_exit(parent)  # the inherited hook runs in a process that is not its registrant
    assert BreakerProcess.objects.filter(pid=os.getppid()).exists()


class _DatabaseDown:
    """Every breaker-row write fails as SQLite's "database is locked" would, until `end()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from django.db.models import QuerySet

        self.down = True
        for name in ("update", "update_or_create"):
            original = getattr(QuerySet, name)

            def failing(queryset, *args, _original=original, **kwargs):  # type: ignore[no-untyped-def]
                if self.down and queryset.model is BreakerProcess:
                    raise OperationalError("database is locked")
                return _original(queryset, *args, **kwargs)

            monkeypatch.setattr(QuerySet, name, failing)

    def end(self) -> None:
        self.down = False


@pytest.mark.django_db(transaction=True)
def test_a_failed_record_write_is_written_again_by_the_next_heartbeat(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    from redis.exceptions import ConnectionError

    identity = ProcessIdentity(host="web-host", pid=4343, role="web")
    recorder = DatabaseRecorder(identity)
    breaker = Breaker(name="unit", fail_max=2, listeners=[recorder], clock=clock)
    recorder.register(breaker)
    recorder.flush()
    database = _DatabaseDown(monkeypatch)
    for _ in range(2):
        with pytest.raises(ConnectionError), breaker.guard():
            raise ConnectionError("down")
    recorder.flush()
    row = BreakerProcess.objects.get(host="web-host", pid=4343)
    assert (row.state, row.consecutive_failures) == ("closed", 0)  # what the admin showed, for as long as it lasted

    database.end()
    recorder.beat()
    recorder.flush()
    row = BreakerProcess.objects.get(host="web-host", pid=4343)
    assert (row.state, row.consecutive_failures) == ("open", 2)
    assert datetime.now(UTC) - row.last_seen < timedelta(seconds=5)


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_keeps_an_unchanged_record_fresh_and_a_silent_one_shows_as_stale() -> None:
    from dashboards.live import breaker_rows

    identity = ProcessIdentity(host="web-host", pid=4444, role="web")
    recorder = DatabaseRecorder(identity)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    recorder(BreakerEvent(name="unit", old=None, new=State.CLOSED, failures=0, at=long_ago))
    recorder.beat()
    recorder.flush()
    row = BreakerProcess.objects.get(host="web-host", pid=4444)
    assert row.last_change == long_ago  # no change for ten minutes, and still confirmed now

    heartbeat = timedelta(seconds=DatabaseRecorder.HEARTBEAT_SECONDS)
    [fresh] = breaker_rows(now=row.last_seen + 2 * heartbeat)
    assert not fresh.stale and fresh.label == "Closed"
    [silent] = breaker_rows(now=row.last_seen + 3 * heartbeat + timedelta(seconds=1))
    assert silent.stale and silent.label != "Closed" and "stale" in silent.label


def test_the_heartbeat_thread_beats_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = DatabaseRecorder(ProcessIdentity(host="h", pid=1, role="web"))
    beats = threading.Semaphore(0)
    monkeypatch.setattr(recorder, "beat", beats.release)
    recorder.start_heartbeat(interval=0.01)
    assert beats.acquire(timeout=5) and beats.acquire(timeout=5)
    recorder.stop()
    assert recorder._heartbeat is not None and not recorder._heartbeat.is_alive()


@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_prunes_the_row_of_a_process_that_ended_without_its_exit_hooks_within_a_minute() -> None:
    identity = ProcessIdentity.current("web")
    dead = _exited_pid()
    a_minute_ago = datetime.now(UTC) - timedelta(minutes=1)
    BreakerProcess.objects.create(
        host=identity.host, pid=dead, role="worker", state="closed", last_change=a_minute_ago, last_seen=a_minute_ago
    )
    recorder = DatabaseRecorder(identity)
    recorder.beat()
    recorder.flush()
    assert not BreakerProcess.objects.filter(pid=dead).exists()  # before: kept for an hour


def test_the_heartbeat_ends_quietly_once_the_writer_takes_no_more_work(monkeypatch: pytest.MonkeyPatch) -> None:
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    recorder = DatabaseRecorder(ProcessIdentity(host="h", pid=1, role="web"))
    recorder._executor.shutdown()  # as at interpreter exit: submit() raises RuntimeError
    recorder.start_heartbeat(interval=0.01)
    assert recorder._heartbeat is not None
    recorder._heartbeat.join(timeout=5)
    assert not recorder._heartbeat.is_alive()
    assert escaped == []  # before: a RuntimeError traceback on stderr as the process exited
