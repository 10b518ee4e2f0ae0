#!/usr/bin/env python3
"""Run the processes of a Procfile; restart any that exits or dies; stop them all on Ctrl-C.

`make run` (scripts/run.sh) runs deploy/Procfile with this instead of honcho, which stopped
every process as soon as one exited: a killed Celery worker took the web server and beat
down with it. Here a process that exits, whatever its status or signal, is started again
after a back-off (1 s, doubling up to 30 s; back to 1 s once it has run for a minute) while
the others keep serving. Only SIGINT (Ctrl-C), SIGTERM or SIGHUP to this supervisor stops
everything: SIGTERM to each process group, SIGKILL to what is left after the grace period.

Each line runs under `sh -c` in a process group of its own, so that stopping or restarting
one reaches its children too (uvicorn's workers, Celery's pool: no orphans) and the
terminal's Ctrl-C reaches only this supervisor, which then stops them in order.
Standard library only, so that it runs before any dependency is installed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

STABLE_SECONDS = 60.0
POLL_SECONDS = 0.1

_print_lock = threading.Lock()


def say(name: str, text: str, *, width: int = 8) -> None:
    with _print_lock:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<{width}}| {text.rstrip()}\n")
        sys.stdout.flush()


def parse_procfile(text: str) -> list[tuple[str, str]]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip().replace("-", "").replace("_", "").isalnum() or not command.strip():
            raise SystemExit(f"Procfile line {number} is not `name: command`: {line!r}")
        entries.append((name.strip(), command.strip()))
    if not entries:
        raise SystemExit("The Procfile names no process")
    return entries


@dataclass
class Child:
    name: str
    command: str
    backoff: float
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0
    pumps: list[threading.Thread] = field(default_factory=list)

    def start(self, width: int) -> None:
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", self.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, out of reach of the terminal's Ctrl-C
        )
        self.started = time.monotonic()
        say(self.name, f"started with pid {self.process.pid}", width=width)
        pump = threading.Thread(target=self._pump, args=(self.process, width), daemon=True)
        pump.start()
        self.pumps = [pump]

    def _pump(self, process: subprocess.Popen[bytes], width: int) -> None:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            say(self.name, line.decode("utf-8", "replace"), width=width)

    def signal_group(self, signum: int) -> bool:
        """Send `signum` to the child's process group; False when nothing is left in it."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True


class Supervisor:
    def __init__(self, entries: list[tuple[str, str]], *, backoff: float, max_backoff: float, grace: float) -> None:
        self.children = [Child(name, command, backoff) for name, command in entries]
        self.initial_backoff = backoff
        self.max_backoff = max_backoff
        self.grace = grace
        self.width = max(len(name) for name, _ in entries) + 1
        self.stop_signal: int | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        for child in self.children:
            child.start(self.width)
        while self.stop_signal is None:
            now = time.monotonic()
            for child in self.children:
                self._watch(child, now)
            time.sleep(POLL_SECONDS)
        say("supervise", f"{signal.Signals(self.stop_signal).name}: stopping every process", width=self.width)
        self.stop_all()
        return 0

    def _watch(self, child: Child, now: float) -> None:
        if child.process is None:  # waiting out its back-off
            if now >= child.restart_at:
                child.restarts += 1
                child.start(self.width)
            return
        status = child.process.poll()
        if status is None:
            return
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
        # Whatever it started (uvicorn's workers, Celery's pool) goes with it, or the new one
        # would find the port taken.
        self._end_group(child)
        child.process = None
        if now - child.started >= STABLE_SECONDS:
            child.backoff = self.initial_backoff
        child.restart_at = now + child.backoff
        say(child.name, f"{how}; restarting in {child.backoff:g} s (the others keep running)", width=self.width)
        child.backoff = min(child.backoff * 2, self.max_backoff)

    def _end_group(self, child: Child) -> None:
        if child.signal_group(signal.SIGTERM):
            deadline = time.monotonic() + min(self.grace, 5.0)
            while time.monotonic() < deadline and child.signal_group(0):
                time.sleep(POLL_SECONDS)
            child.signal_group(signal.SIGKILL)

    def stop_all(self) -> None:
        running = [child for child in self.children if child.process is not None]
        for child in running:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(child.name, f"still running after {self.grace:g} s: killing it", width=self.width)
        # Anything left in a group (a worker whose parent exited first) is killed, not orphaned.
        while time.monotonic() < deadline and any(child.signal_group(0) for child in running):
            time.sleep(POLL_SECONDS)
        for child in running:
            child.signal_group(signal.SIGKILL)
            assert child.process is not None
            child.process.wait()
            status = child.process.returncode
            say(child.name, "stopped" if status in (0, -signal.SIGTERM) else f"stopped ({status})", width=self.width)
        for child in running:
            for pump in child.pumps:
                pump.join(timeout=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("procfile", type=Path)
    parser.add_argument("--backoff", type=float, default=1.0, help="seconds before a first restart (default 1)")
    parser.add_argument("--max-backoff", type=float, default=30.0, help="longest wait between restarts (default 30)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to stop before SIGKILL (default 10)")
    args = parser.parse_args(argv)
    entries = parse_procfile(args.procfile.read_text(encoding="utf-8"))
    return Supervisor(entries, backoff=args.backoff, max_backoff=args.max_backoff, grace=args.grace).run()


if __name__ == "__main__":
    sys.exit(main())
