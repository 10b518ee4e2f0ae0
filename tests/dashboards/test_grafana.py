"""The Grafana dashboard in deploy/ uses only series that /metrics exports after a chat turn."""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.contrib.auth.models import User
from django.test import Client

from agents.chat import run_turn
from tests.conftest import Demo

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tokencache-dashboard.json"
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "vector",
    "or", "and", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers that are not functions, keywords or labels."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)  # label matchers, ranges
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", bare)  # grouping labels
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
    return {name for name in names if name not in PROMQL_WORDS and not name.startswith("$")}


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        query = variable.get("definition", "")
        found.extend(("variable " + variable["name"], m) for m in re.findall(r"label_values\((\w+)", query))
    return found


def test_the_metric_name_parser_sees_names_not_labels_or_functions() -> None:
    expr = 'histogram_quantile(0.5, sum by (le, agent) (rate(tokencache_turn_seconds_bucket{agent=~"$agent"}[5m])))'
    assert metric_names(expr) == {"tokencache_turn_seconds_bucket"}


def test_every_grafana_expression_names_series_that_metrics_exports(demo: Demo, alice: User) -> None:
    run_turn(user=alice, agent=demo.agents["support"], message="What should I do when Redis is down?")
    Client().get("/healthz")  # django-prometheus' request series
    exported = Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode()
    series = {line.split("{")[0].split(" ")[0] for line in exported.splitlines() if line and not line.startswith("#")}
    # A labelled counter nobody has incremented yet (Redis errors) is declared, with no sample.
    for kind_line in re.findall(r"^# TYPE (\S+) (\S+)$", exported, flags=re.MULTILINE):
        name, kind = kind_line
        series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else set()
        series |= {name if name.endswith("_total") else f"{name}_total"} if kind == "counter" else {name}
    missing = {(title, name) for title, expr in expressions() for name in metric_names(expr) if name not in series}
    assert len(expressions()) > 15
    assert not missing, f"series in deploy/grafana that /metrics does not export: {sorted(missing)}"


def test_panel_titles_name_the_window_of_their_figures() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "stat"]
    assert titles and all("selected time range" in title for title in titles)
