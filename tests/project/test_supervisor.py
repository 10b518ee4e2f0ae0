"""scripts/supervise.py (what `make run` runs): one process dying is restarted, the others keep running.

Real processes: the supervisor runs a Procfile of tiny shell commands that write their pids to files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        # `web` also starts a child of its own, as uvicorn starts workers.
        f"web: sleep 300 & echo $! >> {tmp_path}/web-child; echo $$ >> {tmp_path}/web; wait\n"
        f"worker: echo $$ >> {tmp_path}/worker; exec sleep 300\n"
        f"beat: echo $$ >> {tmp_path}/beat; exec sleep 300\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "supervise.py"), str(procfile), "--backoff", "0.2", "--grace", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert _wait_for(lambda: all(_pids(tmp_path / name) for name in ("web", "web-child", "worker", "beat")))
    yield supervisor, tmp_path
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait()
    for name in ("web", "web-child", "worker", "beat"):
        for pid in _pids(tmp_path / name):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_process_is_restarted_and_the_others_keep_running(supervised):
    supervisor, files = supervised
    (worker,), (web,), (beat,) = _pids(files / "worker"), _pids(files / "web"), _pids(files / "beat")
    os.kill(worker, signal.SIGKILL)
    assert _wait_for(lambda: len(_pids(files / "worker")) == 2)
    assert _alive(_pids(files / "worker")[-1]) and not _alive(worker)
    os.kill(_pids(files / "worker")[-1], signal.SIGTERM)  # stopped politely, it comes back too
    assert _wait_for(lambda: len(_pids(files / "worker")) == 3)
    assert _alive(web) and _alive(beat) and _alive(_pids(files / "web-child")[0])
    assert _pids(files / "web") == [web] and _pids(files / "beat") == [beat]  # never restarted
    assert supervisor.poll() is None


def test_a_restarted_process_takes_its_children_with_it(supervised):
    _, files = supervised
    (web,), (child,) = _pids(files / "web"), _pids(files / "web-child")
    os.kill(web, signal.SIGKILL)
    assert _wait_for(lambda: len(_pids(files / "web")) == 2)
    assert not _alive(child)  # no orphan holding the old one's port
    assert _alive(_pids(files / "web-child")[-1])


def test_a_process_that_keeps_failing_is_restarted_with_growing_waits(tmp_path: Path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(f"crash: echo $$ >> {tmp_path}/crash; exit 3\nsteady: exec sleep 300\n")
    supervisor = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "supervise.py"), str(procfile), "--backoff", "0.1",
         "--max-backoff", "0.8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.5)  # waits of 0.1, 0.2, 0.4, 0.8, 0.8 s: about 5 starts, not a busy loop
        assert 3 <= len(_pids(tmp_path / "crash")) <= 8
        assert supervisor.poll() is None
    finally:
        supervisor.send_signal(signal.SIGINT)
        output, _ = supervisor.communicate(timeout=15)
    assert "exited with status 3; restarting in 0.8 s" in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_every_process_and_their_children(supervised, signum):
    supervisor, files = supervised
    pids = [pid for name in ("web", "web-child", "worker", "beat") for pid in _pids(files / name)]
    assert all(_alive(pid) for pid in pids)
    supervisor.send_signal(signum)
    output, _ = supervisor.communicate(timeout=15)
    assert supervisor.returncode == 0, output
    assert not [pid for pid in pids if _alive(pid)]
    assert "restarting" not in output
