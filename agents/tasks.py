"""Celery tasks of the agents app: thin interfaces over services that also run without Celery.

Every task is safe to run twice (warming a cached chunk is a hit, forgetting a deleted key
deletes nothing), so they are acknowledged late: a worker killed mid-task leaves it to
another. Redis and database errors are retried with exponential backoff; time limits stop a
task that hangs. Services are imported inside each task: a task module stays an interface.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import OperationalError
from redis.exceptions import RedisError

from agents.warming import CacheUnavailable

COMMON: dict[str, Any] = {
    "autoretry_for": (RedisError, OperationalError, CacheUnavailable),
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(name="agents.refresh_document", soft_time_limit=120, time_limit=150, **COMMON)
def refresh_document(document_id: int, stale_digests: list[str] | None = None) -> int:
    """After a document is saved: free the entries its edit removed, then warm its chunks."""
    from agents.invalidation import forget_unused
    from agents.models import KnowledgeDocument
    from agents.warming import warm_document

    document = KnowledgeDocument.objects.select_related("agent").filter(pk=document_id).first()
    if document is None:
        return 0  # deleted since: its own task frees its entries
    if stale_digests:
        forget_unused(tokenizer_spec=document.agent.tokenizer_spec, digests=stale_digests)
    return warm_document(document_id=document_id).done_chunks


@shared_task(name="agents.forget_digests", soft_time_limit=60, time_limit=90, **COMMON)
def forget_digests(tokenizer_spec: str, digests: list[str]) -> int:
    """After a document is deleted: free its chunks' entries that no other chunk uses."""
    from agents.invalidation import forget_unused

    return forget_unused(tokenizer_spec=tokenizer_spec, digests=digests)


@shared_task(name="agents.warm_cache", soft_time_limit=1800, time_limit=1860, **COMMON)
def warm_cache(run_id: int) -> int:
    """Carry out a requested warming run (admin, API, command, cold start)."""
    from agents.models import WarmingRun
    from agents.warming import run_warming

    run = WarmingRun.objects.filter(pk=run_id).first()
    if run is None or run.status not in (WarmingRun.Status.QUEUED, WarmingRun.Status.FAILED):
        return 0  # a redelivered task for a run that finished or is running elsewhere
    return run_warming(run=run).done_chunks


@shared_task(name="agents.check_cold_start", soft_time_limit=30, time_limit=45, ignore_result=True)
def check_cold_start() -> bool:
    """Every minute (beat): if the cache came back empty, re-warm it, hottest chunks first."""
    from agents.warming import rewarm_if_cold

    return rewarm_if_cold() is not None


@shared_task(name="agents.requeue_orphaned_warming", soft_time_limit=30, time_limit=45, ignore_result=True)
def requeue_orphaned_warming() -> int:
    """Every minute (beat) and as a worker starts: runs left `running` by a dead worker are queued again."""
    from agents.warming import requeue_orphaned_runs

    return len(requeue_orphaned_runs())


@shared_task(name="agents.tune_ttl_policies", soft_time_limit=600, time_limit=660, **COMMON)
def tune_ttl_policies() -> int:
    """Hourly (beat): recommend each policy's TTL, and apply it where the policy says so."""
    from agents.tuner import tune_all

    return sum(1 for result in tune_all().values() if result.applied)
