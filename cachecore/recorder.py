"""The breaker state of every running process, kept in the database for the admin.

`DatabaseRecorder` is a breaker listener: it writes this process's `BreakerProcess` row on
every state change and again on every heartbeat, deletes it as the process exits, and prunes
the rows of this host's processes that are gone.
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from cachecore import metrics
from cachecore.breaker import Breaker, BreakerEvent, State
from cachecore.process import ProcessIdentity, pid_alive

logger = logging.getLogger(__name__)


class DatabaseRecorder:
    """Listener: keeps this process's row in `BreakerProcess` up to date.

    Writes happen on one background thread so that a state change never adds a
    database write (or a SQLite lock wait) to the chat turn that noticed it, and
    works the same when the caller runs inside an event loop or a transaction.

    A write may fail (SQLite busy, the database down) and writes may finish out of
    order, so a write never records the event that queued it: it records the latest
    state known, with `last_seen` set to now. `beat()` (every `HEARTBEAT_SECONDS` on
    the thread `start_heartbeat` starts) writes it again, so the row converges to the
    truth within one heartbeat of the database answering, and a row not seen for three
    heartbeats is one whose process stopped reporting (dashboards show it stale).

    Rows of processes that are gone must not stay in the admin: a process deletes its
    own row at exit (`forget`), and the row of one that ended without running its exit
    hooks (killed, or a prefork child ending with os._exit) is pruned by the next
    heartbeat or registration of another process on the same host.
    """

    HEARTBEAT_SECONDS = 15.0
    # A row of this host not seen for this long whose pid no longer exists is pruned. Only
    # our own host's pids can be checked; the age keeps the rows of a same-named host
    # elsewhere, which beats every 15 s, out of reach.
    PRUNE_AFTER = timedelta(seconds=2 * HEARTBEAT_SECONDS)
    PRUNE_BATCH = 100  # rows looked at per beat: bounded work, off the request thread

    def __init__(self, identity: ProcessIdentity) -> None:
        self.identity = identity
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokencache-breaker-record")
        self._lock = threading.Lock()
        self._known: tuple[State, int, datetime] | None = None  # state, failures, last change
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __call__(self, event: BreakerEvent) -> None:
        with self._lock:
            self._known = (event.new, event.failures, event.at)
        self._executor.submit(self._write)

    def register(self, breaker: Breaker) -> None:
        """Record the process as it starts using the cache, so the admin lists it,
        and prune the rows of this host's processes that are gone."""
        with self._lock:
            if self._known is None:
                self._known = (breaker.state, breaker.failures, datetime.now(UTC))
        self.beat()

    def beat(self) -> None:
        """Write the latest known state again, with `last_seen` now, and prune dead rows.

        Queued on the writer thread, like every write (tests call it, then `flush()`).
        """
        self._executor.submit(self._write)
        self._executor.submit(self._prune_dead)

    def start_heartbeat(self, interval: float | None = None) -> None:
        """Call `beat()` every `interval` seconds (default `HEARTBEAT_SECONDS`) on a daemon
        thread, one per process, until `stop()` or the process ends."""
        if self._heartbeat is not None:
            return
        seconds = self.HEARTBEAT_SECONDS if interval is None else interval

        def run() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.beat()
                except RuntimeError:  # the writer no longer takes work: the interpreter is exiting
                    return

        self._heartbeat = threading.Thread(target=run, name="tokencache-breaker-heartbeat", daemon=True)
        self._heartbeat.start()

    def stop(self) -> None:
        """Stop the heartbeat (at exit, before `forget`)."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=1.0)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued write is done (for tests and shutdown)."""
        done: Future[None] = self._executor.submit(lambda: None)
        done.result(timeout=timeout)

    def forget(self) -> None:
        """Delete this process's row and its live metrics, as it exits.

        Runs on the calling thread: at interpreter exit (atexit) the executor's
        thread has already finished its queue and stopped.
        """
        from cachecore.models import BreakerProcess

        self._guarded(
            "delete this process's row",
            lambda: BreakerProcess.objects.filter(host=self.identity.host, pid=self.identity.pid).delete(),
        )
        metrics.mark_process_dead(self.identity.pid)

    def _prune_dead(self) -> None:
        from cachecore.models import BreakerProcess

        def prune() -> None:
            stale = (
                BreakerProcess.objects.filter(
                    host=self.identity.host, last_seen__lt=datetime.now(UTC) - self.PRUNE_AFTER
                )
                .exclude(pid=self.identity.pid)
                .values_list("pk", "pid")[: self.PRUNE_BATCH]
            )
            dead = {pk: pid for pk, pid in stale if not pid_alive(pid)}
            if dead:
                BreakerProcess.objects.filter(pk__in=dead).delete()
                for pid in dead.values():
                    metrics.mark_process_dead(pid)
                logger.info(
                    "pruned the breaker rows of %d dead processes on %s",
                    len(dead),
                    self.identity.host,
                    extra={"event": "breaker_rows_pruned", "pids": sorted(dead.values())},
                )

        self._guarded("prune the rows of dead processes", prune)

    def _write(self) -> None:
        from cachecore.models import BreakerProcess

        with self._lock:
            known = self._known
        if known is None:
            return
        state, failures, changed = known

        def write() -> None:
            fields = {
                "role": self.identity.role,
                "state": state.value,
                "consecutive_failures": failures,
                "last_change": changed,
                "last_seen": datetime.now(UTC),
            }
            # One UPDATE on a heartbeat; the INSERT only when the row is missing (first
            # write, or deleted by hand while the process runs).
            mine = BreakerProcess.objects.filter(host=self.identity.host, pid=self.identity.pid)
            if not mine.update(**fields):
                BreakerProcess.objects.update_or_create(host=self.identity.host, pid=self.identity.pid, defaults=fields)

        self._guarded(f"record state {state.value}", write)

    def _guarded(self, what: str, work: Callable[[], object]) -> None:
        from django.db import connection

        try:
            work()
        except Exception as exc:  # the database may be down too: log, the next beat writes again
            logger.warning(
                "breaker rows: could not %s: %s",
                what,
                exc,
                extra={"event": "breaker_record_failed", "breaker_process": self.identity.label},
            )
        finally:
            connection.close()
