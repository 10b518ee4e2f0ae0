"""The Celery app: configured from Django settings under the CELERY_ namespace."""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokencache_project.settings")

app = Celery("tokencache_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def start_token_cache(**_: object) -> None:
    """Each pool process (a respawned one too) records its breaker and starts its heartbeat as
    it starts, not at its first task that uses the cache."""
    from cachecore.store import default_store

    default_store()


@worker_ready.connect
def requeue_orphaned_warming(**_: object) -> None:
    """A worker that starts (a restart after a crash, typically) takes up warming runs its dead
    predecessor left `running`, instead of leaving them for beat's next minute."""
    from agents.warming import requeue_orphaned_runs

    requeue_orphaned_runs()


@app.task(name="agents.mark_interrupted_turns", ignore_result=True)
def mark_interrupted_turns() -> int:
    """Beat runs this every few minutes (CELERY_BEAT_SCHEDULE): questions whose turn died get an error answer."""
    from agents.interrupted import mark_interrupted_turns as mark

    return len(mark())
