"""Admin: every process's breaker record (cachecore's model), with the cache figures above the list.

Registered here rather than in cachecore: the figures and the stale-record rule are the
dashboards' (`dashboards.figures`, `dashboards.live`), and cachecore imports nothing above it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from cachecore.models import BreakerProcess
from cachecore.stats import collect_stats
from dashboards.figures import (
    HIT_RATE_MEANS,
    SINCE_PROCESS_START,
    STALE_AFTER,
    breaker_state_label,
    format_bytes,
    format_count,
    format_duration,
    format_ms,
    format_percent,
    hit_rate,
)
from dashboards.live import breaker_summary, redis_state, stored_usage


@admin.register(BreakerProcess)
class BreakerProcessAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("host", "pid", "role", "state_shown", "consecutive_failures", "last_change", "recorded")
    list_filter = ("state", "role", "host")
    change_list_template = "admin/cachecore/breakerprocess/change_list.html"

    # Rows are written by the processes themselves; people only read (and may delete
    # the rows of processes that are gone).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BreakerProcess | None = None) -> bool:
        return False

    @admin.display(description="state", ordering="state")
    def state_shown(self, record: BreakerProcess) -> str:
        return breaker_state_label(record.state, stale=timezone.now() - _seen(record) > STALE_AFTER)

    @admin.display(description="last recorded", ordering="last_seen")
    def recorded(self, record: BreakerProcess) -> str:
        return f"{format_duration((timezone.now() - _seen(record)).total_seconds())} ago"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        stats = collect_stats(include_redis=False)
        redis = redis_state()
        usage = stored_usage(redis)
        figures = {
            "window": SINCE_PROCESS_START,
            "means": HIT_RATE_MEANS,
            "lookups": format_count(stats.lookups),
            "hit_rate": format_percent(hit_rate(stats.hits, stats.misses)),
            "hits": format_count(stats.hits),
            "misses": format_count(stats.misses),
            "bypassed": format_count(stats.bypassed),
            "corrupt": format_count(stats.corrupt),
            "mean_hit": format_ms(stats.mean_hit_ms),
            "mean_miss": format_ms(stats.mean_miss_ms),
            "redis_answers": redis.answers,
            "redis_error": redis.error,
            "tokens_cached": format_count(usage.tokens) if usage else None,
            "entries": format_count(usage.entries) if usage else None,
            "bytes": format_bytes(usage.bytes) if usage else None,
            "bytes_per_token": f"{usage.bytes / usage.tokens:.2f}" if usage and usage.tokens else None,
            "complete": usage.complete if usage else True,
        }
        context = {
            **(extra_context or {}),
            "cache_figures": figures,
            "breakers": breaker_summary(),
            "stale_after": format_duration(STALE_AFTER.total_seconds()),
        }
        return super().changelist_view(request, extra_context=context)  # type: ignore[return-value]


def _seen(record: BreakerProcess) -> Any:
    # The record's last write: every 15 s, the heartbeat's (cachecore.recorder).
    return getattr(record, "last_seen", None) or record.last_change
