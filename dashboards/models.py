"""The dashboards' durable figures: per-minute rollups of the answer records, and TTL changes.

Minute rows are written by `dashboards.rollup.run_rollup` (a Celery beat task, or
`manage.py rollup_cache_stats`); hour and day rows are sums of them, kept after the minute
rows are pruned (7 days). What each figure means is defined once, in `dashboards.figures`.
"""

from __future__ import annotations

from django.db import models

from agents.models import Agent, TTLPolicy


def _empty() -> list[int]:
    return []


class Rollup(models.Model):
    """What one agent's chat turns did during one minute, hour or day (UTC)."""

    class Resolution(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"
        DAY = "day"

    resolution = models.CharField(max_length=6, choices=Resolution.choices)
    start = models.DateTimeField()
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    # The policy the agent used when the bucket was rolled up: a policy's figures are the sum of these.
    ttl_policy = models.ForeignKey(TTLPolicy, on_delete=models.SET_NULL, null=True, related_name="+")
    turns = models.PositiveIntegerField(default=0)  # answered (status ok)
    errors = models.PositiveIntegerField(default=0)  # error answers
    hits = models.PositiveIntegerField(default=0)
    misses = models.PositiveIntegerField(default=0)  # corrupt entries not included: see `corrupt`
    bypassed = models.PositiveIntegerField(default=0)
    corrupt = models.PositiveIntegerField(default=0)
    tokens_from_cache = models.PositiveBigIntegerField(default=0)
    tokens_tokenized = models.PositiveBigIntegerField(default=0)
    context_tokens = models.PositiveBigIntegerField(default=0)
    # tokens_from_cache x the tokenizer's measured cost per token (`TokenizerCost`), in ms.
    tokenize_ms_saved = models.FloatField(default=0)
    # Counts per bucket of cachecore.metrics' bucket edges (the last one is "above the last edge").
    lookup_hist = models.JSONField(default=_empty)
    retrieval_hist = models.JSONField(default=_empty)
    generation_hist = models.JSONField(default=_empty)
    total_hist = models.JSONField(default=_empty)
    context_hist = models.JSONField(default=_empty)
    feedback_up = models.PositiveIntegerField(default=0)
    feedback_down = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["resolution", "agent", "start"], name="rollup_one_row_per_bucket"),
        ]
        indexes = [
            models.Index(fields=["resolution", "start"], name="rollup_by_time"),
            models.Index(fields=["resolution", "ttl_policy", "start"], name="rollup_by_policy"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.resolution} {self.start:%Y-%m-%d %H:%M}"


class RollupState(models.Model):
    """One row: the answer records before `rolled_until` are in the minute rollups."""

    rolled_until = models.DateTimeField(null=True)
    last_run = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"rolled up until {self.rolled_until}"


class TokenizerCost(models.Model):
    """The measured cost of tokenizing with one tokenizer: what a cache hit saves per token."""

    tokenizer_spec = models.CharField(max_length=500, unique=True)
    ms_per_token = models.FloatField()
    sample_tokens = models.PositiveIntegerField()
    measured_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.tokenizer_spec}: {self.ms_per_token * 1000:.2f} us/token"
