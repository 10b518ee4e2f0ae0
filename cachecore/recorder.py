"""The breaker state of every running process, kept in the database for the admin.

`DatabaseRecorder` is a breaker listener: it writes this process's `BreakerProcess` row on
every state change, deletes it as the process exits, and prunes the rows of this host's
processes that died without exiting cleanly.
"""

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from cachecore import metrics
from cachecore.breaker import Breaker, BreakerEvent, State
from cachecore.process import ProcessIdentity

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group: never "dead"
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class DatabaseRecorder:
    """Listener: keeps this process's row in `BreakerProcess` up to date.

    Writes happen on one background thread so that a state change never adds a
    database write (or a SQLite lock wait) to the chat turn that noticed it, and
    works the same when the caller runs inside an event loop or a transaction.

    Rows of processes that are gone must not stay in the admin forever: a process
    deletes its own row at exit (`forget`), and one that died without exiting
    cleanly (killed, or a prefork child ending with os._exit) is pruned when
    another process on the same host registers.
    """

    # A row unchanged this long, on this host, whose pid no longer exists, is pruned.
    # Only our own host's pids can be checked; the age keeps a same-named host
    # elsewhere (or a fresh row racing its process start) out of reach.
    PRUNE_AFTER = timedelta(hours=1)
    PRUNE_BATCH = 100  # rows looked at per registration: bounded work, off the request thread

    def __init__(self, identity: ProcessIdentity) -> None:
        self.identity = identity
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokencache-breaker-record")

    def __call__(self, event: BreakerEvent) -> None:
        self._executor.submit(self._write, event.new, event.failures, event.at)

    def register(self, breaker: Breaker) -> None:
        """Record the process as it starts using the cache, so the admin lists it,
        and prune the rows of this host's processes that have died."""
        self._executor.submit(self._write, breaker.state, breaker.failures, datetime.now(UTC))
        self._executor.submit(self._prune_dead)

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
                    host=self.identity.host, last_change__lt=datetime.now(UTC) - self.PRUNE_AFTER
                )
                .exclude(pid=self.identity.pid)
                .values_list("pk", "pid")[: self.PRUNE_BATCH]
            )
            dead = {pk: pid for pk, pid in stale if not _pid_alive(pid)}
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

    def _write(self, state: State, failures: int, at: datetime) -> None:
        from cachecore.models import BreakerProcess

        self._guarded(
            f"record state {state.value}",
            lambda: BreakerProcess.objects.update_or_create(
                host=self.identity.host,
                pid=self.identity.pid,
                defaults={
                    "role": self.identity.role,
                    "state": state.value,
                    "consecutive_failures": failures,
                    "last_change": at,
                },
            ),
        )

    def _guarded(self, what: str, work: Callable[[], object]) -> None:
        from django.db import connection

        try:
            work()
        except Exception as exc:  # the database may be down too: log and move on
            logger.warning(
                "breaker rows: could not %s: %s",
                what,
                exc,
                extra={"event": "breaker_record_failed", "breaker_process": self.identity.label},
            )
        finally:
            connection.close()
