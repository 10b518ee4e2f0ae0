"""The Celery app: configured from Django settings under the CELERY_ namespace."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokencache_project.settings")

app = Celery("tokencache_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="agents.mark_interrupted_turns", ignore_result=True)
def mark_interrupted_turns() -> int:
    """Beat runs this every few minutes (CELERY_BEAT_SCHEDULE): questions whose turn died get an error answer."""
    from agents.interrupted import mark_interrupted_turns as mark

    return len(mark())
