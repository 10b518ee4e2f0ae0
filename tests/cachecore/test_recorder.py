"""Every process's breaker state in the database: written on each change, gone with the process."""

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cachecore.breaker import Breaker, gauge_and_log
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
    for host, pid, last_change in [
        (identity.host, dead, long_ago),  # pruned
        (identity.host, alive, long_ago),  # its process still runs
        ("another-host", dead, long_ago),  # its pids cannot be checked from here
        (identity.host, dead_just_now, datetime.now(UTC)),  # too recent to judge
    ]:
        BreakerProcess.objects.create(host=host, pid=pid, role="web", state="closed", last_change=last_change)
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
