"""The figures the admin lists and forms show, from the same rollups and definitions as the dashboards."""

from __future__ import annotations

from typing import Any

from django.db.models import FloatField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Cast, Coalesce, NullIf
from django.utils import timezone

from agents.models import TTLPolicy
from dashboards.figures import HIT_RATE_MEANS, WINDOWS, format_duration, window_start
from dashboards.models import Rollup
from dashboards.queries import AgentSummary, Scope, load_window, summary_of
from dashboards.tuning import latest_recommendation, policy_hit_rates, reuse_intervals

DAY_LABEL = WINDOWS["day"].label
WEEK_LABEL = WINDOWS["week"].label
# Column headers: the window in short ("24 h"); the list's note names it in full.
DAY_SHORT = "24 h"
WEEK_SHORT = "7 days"


def rolled_up_hit_rate(outer: str, *, by: str) -> Any:
    """An annotation to sort lists by: the 24 h hit rate of the rolled-up minutes (`by`: agent or ttl_policy).

    Sorting only: the figure shown also counts the answers since the last rollup (`queries.load_window`).
    """
    window = WINDOWS["day"]
    rows = Rollup.objects.filter(
        resolution=window.resolution, start__gte=window_start(window, timezone.now()), **{by: OuterRef(outer)}
    ).order_by()

    def total(name: str) -> Any:
        summed = rows.values(by).annotate(value=Sum(name)).values("value")
        return Coalesce(Subquery(summed), Value(0))

    hits, misses = total("hits"), total("misses")
    # No lookups: -1, below every rate, so both databases sort those rows the same way (NULLs
    # sort last in SQLite and first in PostgreSQL), and NullIf spares PostgreSQL a division by zero.
    rate = Cast(hits, FloatField()) / NullIf(Cast(hits + misses, FloatField()), Value(0.0))
    return Coalesce(rate, Value(-1.0), output_field=FloatField())


def policy_summary(policy_id: int, key: str) -> AgentSummary:
    return summary_of(policy_id, load_window(key, Scope(policy_id=policy_id)).total())


def policy_tuning_context(policy: TTLPolicy) -> dict[str, Any]:
    """What the TTL policy form shows above its fields."""
    return {
        "tuning": {
            "means": HIT_RATE_MEANS,
            "rates": policy_hit_rates(policy),
            "agents": list(policy.agents.order_by("slug").values_list("slug", flat=True)),
            "reuse": reuse_intervals(policy),
            "ttl": format_duration(policy.ttl_seconds),
            "recommendation": latest_recommendation(policy),
            "dashboard": f"/dashboards/policies/{policy.pk}/",
        }
    }
