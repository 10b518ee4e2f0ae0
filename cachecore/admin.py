"""Admin: every process's breaker, and the cache figures above the list."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from cachecore.models import BreakerProcess
from cachecore.stats import collect_stats


@admin.register(BreakerProcess)
class BreakerProcessAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("host", "pid", "role", "state", "consecutive_failures", "last_change")
    list_filter = ("state", "role", "host")
    change_list_template = "admin/cachecore/breakerprocess/change_list.html"

    # Rows are written by the processes themselves; people only read (and may delete
    # the rows of processes that are gone).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BreakerProcess | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        context = {**(extra_context or {}), "cache_stats": collect_stats()}
        return super().changelist_view(request, extra_context=context)  # type: ignore[return-value]
