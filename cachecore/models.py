"""Durable records of the cache core: one row per process for its breaker state."""

from django.db import models
from django.utils import timezone


class BreakerProcess(models.Model):
    """The token-cache breaker of one web or worker process, as last recorded.

    Written by the process itself when it starts using the cache, on every state change
    and on every heartbeat (`last_seen`), so the admin can show all processes, not only the
    one serving the page, and tell a record still confirmed from one nobody updates.
    """

    class Role(models.TextChoices):
        WEB = "web"
        WORKER = "worker"

    class State(models.TextChoices):
        CLOSED = "closed"
        HALF_OPEN = "half-open", "half-open"
        OPEN = "open"

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    state = models.CharField(max_length=16, choices=State.choices)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_change = models.DateTimeField()
    # Set by every write, the heartbeat's included: a record not seen for three heartbeats is stale.
    last_seen = models.DateTimeField(default=timezone.now)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "process breaker"
        verbose_name_plural = "process breakers"
        constraints = [models.UniqueConstraint(fields=["host", "pid"], name="breaker_one_row_per_process")]
        ordering = ["host", "pid"]

    def __str__(self) -> str:
        return f"{self.role}@{self.host}:{self.pid} {self.state}"
