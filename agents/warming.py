"""Warming: writing chunks' token IDs into the cache before anyone asks for them.

A warmed chunk is simply a lookup whose misses are tokenized and written under the agent's
TTL policy (`get_many`), so warming shares single-flight, the breaker and the value format
with chat turns, and a chunk that is already cached costs one MGET. Warming yields the CPU:
after each batch it sleeps long enough that it works at most `duty_cycle` of the time, so a
worker warming a large corpus leaves room for chat turns on the same machine.

One full run per agent at a time: a lock in Redis that expires, so a crashed run cannot hold
it for ever; a run whose worker died is queued again (`requeue_orphaned_runs`). A run someone
asked for (admin, API, command, cold start) writes its progress to its `WarmingRun` row after
every batch, where the admin shows it.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import Agent, Chunk, Message, WarmingRun
from agents.queueing import after_commit
from cachecore.coldstart import cache_is_new
from cachecore.process import pid_alive
from cachecore.store import get_many
from cachecore.tokenizers import get_tokenizer

logger = logging.getLogger(__name__)

HOT_WINDOW = timedelta(days=7)
LOCK_SECONDS = 15 * 60

Sleep = Callable[[float], None]


class CacheUnavailable(Exception):
    """The token cache cannot be written (Redis down or its breaker open): warming can wait."""


@dataclass(frozen=True)
class Budget:
    batch_chunks: int = 64
    # Share of wall time spent warming; the rest is slept, so chat turns keep the CPU.
    duty_cycle: float = 0.5
    # The most chunks one run writes (a cold start of a huge corpus warms the hottest part).
    max_chunks: int | None = None

    @classmethod
    def from_settings(cls) -> Budget:
        return cls(
            batch_chunks=settings.TOKENCACHE_WARM_BATCH_CHUNKS,
            duty_cycle=settings.TOKENCACHE_WARM_DUTY_CYCLE,
            max_chunks=settings.TOKENCACHE_WARM_MAX_CHUNKS or None,
        )


@dataclass
class Tally:
    total_chunks: int = 0
    done_chunks: int = 0
    already_cached: int = 0
    tokens_written: int = 0
    seconds: float = 0.0  # spent warming, sleeps excluded


def warm_chunks(
    chunks: Iterable[Chunk],
    *,
    budget: Budget | None = None,
    on_progress: Callable[[Tally], None] | None = None,
    sleep: Sleep = time.sleep,
) -> Tally:
    """Write the token IDs of `chunks` (with `document.agent.ttl_policy` loaded) into the cache.

    Consecutive chunks of one agent are looked up together, `budget.batch_chunks` at a time.
    Raises `CacheUnavailable` as soon as a whole batch is bypassed: nothing was written, and
    the rest would not be either.
    """
    budget = budget or Budget.from_settings()
    todo = list(itertools.islice(chunks, budget.max_chunks))
    tally = Tally(total_chunks=len(todo))
    for agent, batch in _batches(todo, size=budget.batch_chunks):
        started = time.perf_counter()
        result = get_many(
            get_tokenizer(agent.tokenizer_spec),
            [chunk.text for chunk in batch],
            ttl=agent.ttl_policy.ttl_seconds,
            sliding=agent.ttl_policy.sliding,
            agent=agent.slug,
            digests=[chunk.content_hash for chunk in batch],
        )
        if result.bypassed == len(batch):
            raise CacheUnavailable("the token cache is unavailable (Redis down or its breaker open)")
        spent = time.perf_counter() - started
        tally.done_chunks += len(batch)
        tally.already_cached += result.hits
        tally.tokens_written += result.tokens_tokenized
        tally.seconds += spent
        if on_progress is not None:
            on_progress(tally)
        sleep(spent * (1 - budget.duty_cycle) / budget.duty_cycle)
    return tally


def run_warming(*, run: WarmingRun, budget: Budget | None = None, sleep: Sleep = time.sleep) -> WarmingRun:
    """Carry out a requested run: one agent's chunks, or (no agent) every enabled agent's, hottest first.

    Skipped while another run for the same agent holds the lock. Raises `CacheUnavailable`
    after recording the run as failed, so a task can retry later.
    """
    lock = _lock_of(run)
    # A run queued again after its worker died still holds its own lock: it takes it over.
    if not cache.add(lock, run.pk, timeout=LOCK_SECONDS) and cache.get(lock) != run.pk:
        _finish(run, WarmingRun.Status.SKIPPED)
        return run
    cache.set(lock, run.pk, timeout=LOCK_SECONDS)
    try:
        run.status, run.started = WarmingRun.Status.RUNNING, timezone.now()
        run.worker_host, run.worker_pid = socket.gethostname(), os.getpid()
        run.save()
        chunks = (
            _chunks().filter(document__agent_id=run.agent_id).order_by("document_id", "position")
            if run.agent_id is not None
            else hottest_chunks()
        )
        warm_chunks(chunks, budget=budget, on_progress=lambda tally: _record(run, tally), sleep=sleep)
        _finish(run, WarmingRun.Status.DONE)
        logger.info("warming_done", extra={"run": run.pk, "chunks": run.done_chunks, "tokens": run.tokens_written})
        return run
    except CacheUnavailable as error:
        run.error = str(error)
        _finish(run, WarmingRun.Status.FAILED)
        raise
    finally:
        cache.delete(lock)


def request_warming(*, agent: Agent | None, reason: str) -> WarmingRun:
    """Record a run for one agent (None: every agent, hottest chunks first) and queue it for the worker."""
    from agents import tasks

    run = WarmingRun.objects.create(agent=agent, reason=reason)
    after_commit(tasks.warm_cache, run.pk)
    return run


def rewarm_if_cold() -> WarmingRun | None:
    """Queue a cold-start run if the cache came back empty since the last check (see cachecore.coldstart)."""
    if not cache_is_new():
        return None
    logger.warning("token_cache_cold", extra={"event": "cold_start"})
    return request_warming(agent=None, reason=WarmingRun.Reason.COLD_START)


def requeue_orphaned_runs() -> list[WarmingRun]:
    """Queue again the runs left `running` by a worker that is gone, so none stays `running` for good.

    Gone: on this host, its process no longer exists; on another host (whose processes cannot be
    checked from here), its lock, refreshed by every batch, has expired. Called when a worker
    starts and by beat every minute; the broker would redeliver the task itself only after its
    visibility timeout (an hour), and that copy would find the run already carried out.
    """
    host = socket.gethostname()
    requeued = []
    for run in WarmingRun.objects.filter(status=WarmingRun.Status.RUNNING):
        if run.worker_host == host and run.worker_pid is not None:
            gone = not pid_alive(run.worker_pid)
        else:
            gone = cache.get(_lock_of(run)) != run.pk
        if not gone:
            continue
        # Only if still running as we saw it: two checks at once requeue a run once.
        claimed = WarmingRun.objects.filter(pk=run.pk, status=WarmingRun.Status.RUNNING).update(
            status=WarmingRun.Status.QUEUED,
            error=f"its worker stopped after {run.done_chunks} of {run.total_chunks} chunks; queued again",
        )
        if claimed:
            from agents import tasks

            after_commit(tasks.warm_cache, run.pk)
            requeued.append(run)
            logger.warning("warming_run_requeued", extra={"run": run.pk, "done": run.done_chunks})
    return requeued


def warm_document(*, document_id: int, sleep: Sleep = time.sleep) -> Tally:
    """Warm one saved document's chunks: the first question after an edit is already a hit."""
    return warm_chunks(_chunks().filter(document_id=document_id), sleep=sleep)


def hottest_chunks(*, now: datetime | None = None) -> list[Chunk]:
    """Every enabled agent's chunks, those used most in the last week first (by the answers' records)."""
    since = (now or timezone.now()) - HOT_WINDOW
    uses: Counter[int] = Counter()
    records = Message.objects.filter(role=Message.Role.ASSISTANT, created__gte=since).values_list(
        "chunk_outcomes", flat=True
    )
    for outcomes in records.iterator(chunk_size=2000):
        uses.update(o["chunk_id"] for o in outcomes or () if isinstance(o, dict) and "chunk_id" in o)
    chunks = list(_chunks().order_by("document__agent_id", "document_id", "position"))
    chunks.sort(key=lambda chunk: -uses.get(chunk.pk, 0))  # stable: unused chunks keep their order
    return chunks


def _chunks() -> QuerySet[Chunk]:
    return Chunk.objects.filter(document__agent__enabled=True).select_related("document__agent__ttl_policy")


def _batches(chunks: Sequence[Chunk], *, size: int) -> Iterator[tuple[Agent, list[Chunk]]]:
    for _, group in itertools.groupby(chunks, key=lambda chunk: chunk.document.agent_id):
        members = list(group)
        for start in range(0, len(members), size):
            yield members[0].document.agent, members[start : start + size]


def _lock_of(run: WarmingRun) -> str:
    return f"tc:v1:warming:{run.agent_id or 'all'}"


def _record(run: WarmingRun, tally: Tally) -> None:
    cache.touch(_lock_of(run), LOCK_SECONDS)  # still working: the lock lasts another interval
    run.total_chunks, run.done_chunks = tally.total_chunks, tally.done_chunks
    run.already_cached, run.tokens_written, run.seconds = tally.already_cached, tally.tokens_written, tally.seconds
    run.save(update_fields=["total_chunks", "done_chunks", "already_cached", "tokens_written", "seconds"])


def _finish(run: WarmingRun, status: str) -> None:
    run.status, run.finished = status, timezone.now()
    run.save()
