"""Queueing Celery tasks from services without letting the queue decide whether a write succeeds.

Tasks are sent only once the transaction commits (a worker must find the rows it is told
about), and a broker that is down or refuses costs a warning, never the edit: the work a task
would do (warming, freeing memory) is an optimisation the next chat turn does not need.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)


def after_commit(task: Any, *args: Any, **kwargs: Any) -> None:
    """Send `task` with these arguments when the current transaction commits (at once outside one)."""

    def send() -> None:
        try:
            task.apply_async(args=args, kwargs=kwargs, retry=False)
        except Exception:
            logger.warning("task_not_queued", extra={"task": task.name}, exc_info=True)

    transaction.on_commit(send)
