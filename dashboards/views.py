"""Dashboard pages, their polled fragments, and each chart's data as CSV or JSON.

Pages poll `?fragment=1` every 5 s (static/dashboards/dashboards.js) and swap the panels in;
without script they are complete pages that a reload refreshes.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from agents.models import Agent, TTLPolicy
from dashboards.access import dashboard_access
from dashboards.figures import (
    CHART_WINDOWS,
    DEFAULT_WINDOW,
    HIT_RATE_MEANS,
    STALE_AFTER,
    WINDOWS,
    format_bytes,
    format_count,
    format_duration,
)
from dashboards.live import breaker_rows, breaker_summary, redis_state
from dashboards.panels import CHARTS, build_page
from dashboards.queries import LAG_WARNING, Scope, policy_changes, rollup_lag
from dashboards.rollup import tokenizer_costs

POLL_SECONDS = 5


def _window(request: HttpRequest) -> str:
    key = request.GET.get("window", DEFAULT_WINDOW)
    return key if key in CHART_WINDOWS else DEFAULT_WINDOW


def _render(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    fragment = request.GET.get("fragment") == "1"
    context = {
        **context,
        "nav": "dashboards",
        "can_view_dashboards": True,
        "poll_seconds": POLL_SECONDS,
        "fragment": fragment,
        "hit_rate_means": HIT_RATE_MEANS,
    }
    if fragment:
        template = template.replace(".html", "_panels.html")
    response = TemplateResponse(request, template, context)
    response["Cache-Control"] = "no-store"
    return response


def _lag(now: Any) -> dict[str, Any]:
    lag = rollup_lag(now=now)
    return {
        "rollup_lag": None if lag is None else format_duration(lag.total_seconds()),
        "rollup_behind": lag is None or lag > LAG_WARNING,
    }


def _panel_context(request: HttpRequest, scope: Scope, **extra: Any) -> dict[str, Any]:
    window_key = _window(request)
    page = build_page(scope, window_key, marker_policy=extra.pop("marker_policy", None))
    return {
        "page": page,
        "tables": page.tables,
        "window": WINDOWS[window_key],
        "windows": [WINDOWS[key] for key in CHART_WINDOWS],
        "now": page.now,
        **_lag(page.now),
        **extra,
    }


@require_safe
@dashboard_access
def overview(request: HttpRequest) -> HttpResponse:
    context = _panel_context(request, Scope())
    context["agents"] = list(Agent.objects.select_related("ttl_policy").order_by("slug"))
    context["policies"] = list(TTLPolicy.objects.order_by("name"))
    context["breakers"] = breaker_summary()
    return _render(request, "dashboards/overview.html", context)


@require_safe
@dashboard_access
def agent_page(request: HttpRequest, slug: str) -> HttpResponse:
    agent = get_object_or_404(Agent.objects.select_related("ttl_policy"), slug=slug)
    context = _panel_context(request, Scope(agent_id=agent.pk), marker_policy=agent.ttl_policy_id)
    context["agent"] = agent
    context["policy"] = agent.ttl_policy
    context["policy_ttl"] = format_duration(agent.ttl_policy.ttl_seconds)
    cost = tokenizer_costs().get(agent.pk)
    context["tokenizer_cost"] = None if cost is None else f"{cost * 1000:.2f} µs per token"
    return _render(request, "dashboards/agent.html", context)


@require_safe
@dashboard_access
def policy_page(request: HttpRequest, pk: int) -> HttpResponse:
    policy = get_object_or_404(TTLPolicy, pk=pk)
    context = _panel_context(request, Scope(policy_id=policy.pk))
    context["policy"] = policy
    context["policy_ttl"] = format_duration(policy.ttl_seconds)
    context["policy_agents"] = list(policy.agents.order_by("slug"))
    since = timezone.now() - WINDOWS["month"].span
    context["changes"] = list(reversed(policy_changes(policy_id=policy.pk, since=since)))
    return _render(request, "dashboards/policy.html", context)


@require_safe
@dashboard_access
def live(request: HttpRequest) -> HttpResponse:
    rows = breaker_rows()
    redis = redis_state()
    context = {
        "breakers": rows,
        "summary": breaker_summary(rows),
        "stale_after": format_duration(STALE_AFTER.total_seconds()),
        "redis": redis,
        "redis_used": format_bytes(redis.used_memory),
        "redis_max": format_bytes(redis.maxmemory) if redis.maxmemory else "no limit",
        "redis_fraction": "—" if redis.memory_fraction is None else f"{redis.memory_fraction:.1%}",
        "redis_evicted": format_count(redis.evicted_keys),
        "redis_keys": format_count(redis.keys),
        "redis_clients": format_count(redis.connected_clients),
        "now": timezone.now(),
    }
    return _render(request, "dashboards/live.html", context)


def _scope(request: HttpRequest) -> Scope:
    agent, policy = request.GET.get("agent"), request.GET.get("policy")
    if agent:
        found = Agent.objects.filter(slug=agent).values_list("pk", flat=True).first()
        if found is None:
            raise Http404("No such agent.")
        return Scope(agent_id=found)
    if policy:
        if not policy.isdigit() or not TTLPolicy.objects.filter(pk=int(policy)).exists():
            raise Http404("No such TTL policy.")
        return Scope(policy_id=int(policy))
    return Scope()


@require_safe
@dashboard_access
def chart_csv(request: HttpRequest, chart: str) -> HttpResponse:
    if chart not in CHARTS:
        raise Http404("No such chart.")
    window_key = _window(request)
    table = build_page(_scope(request), window_key, only=chart).tables[chart]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table.header)
    writer.writerows(table.rows)
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    suffix = "" if chart.startswith("hit-rate-") else f"-{window_key}"
    response["Content-Disposition"] = f'attachment; filename="tokencache-{chart}{suffix}.csv"'
    return response


@require_safe
@dashboard_access
def figures_json(request: HttpRequest) -> JsonResponse:
    window_key = _window(request)
    page = build_page(_scope(request), window_key)
    return JsonResponse(
        {
            "window": WINDOWS[window_key].label,
            "hit_rate_means": HIT_RATE_MEANS,
            "generated_at": page.now.isoformat(),
            "charts": {
                name: {"title": t.title, "header": t.header, "rows": t.rows, "note": t.note}
                for name, t in page.tables.items()
            },
        }
    )
