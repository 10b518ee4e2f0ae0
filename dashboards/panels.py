"""The charts of a dashboard page, each as a table (for CSV and screen readers) and an SVG.

One `Table` per chart is the single source of what the chart, its CSV export and the JSON
endpoint say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.safestring import SafeString

from agents.models import Agent
from dashboards import svg
from dashboards.figures import (
    CHART_WINDOWS,
    CONTEXT_EDGES,
    HIT_RATE,
    HIT_RATE_MEANS,
    LOOKUP_EDGES_MS,
    STAGE_EDGES_MS,
    STAGES,
    WINDOWS,
    format_count,
    format_ms,
    format_percent,
    format_saved,
    hit_rate,
    percentile,
)
from dashboards.queries import Scope, Tail, WindowFigures, agents_by_id, load_window, policy_changes, read_tail
from dashboards.rollup import Bucket

CHARTS = (
    "hit-rate-hour",
    "hit-rate-day",
    "hit-rate-month",
    "outcomes",
    "tokens",
    "latency",
    "context",
    "feedback",
    "agents",
)


@dataclass
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list[Any]]
    shown: list[list[str]] = field(default_factory=list)  # rows in human units, for the page
    chart: SafeString | None = None
    legend: SafeString | None = None
    note: str = ""


NOT_MEASURED = "not measured yet"


def _saved(bucket: Bucket) -> str:
    # Tokens came from the cache but no tokenizer cost was known yet (the rollup times each
    # tokenizer): unknown, never "0 ms".
    if bucket.tokens_from_cache and not bucket.tokenize_ms_saved:
        return NOT_MEASURED
    return format_saved(bucket.tokenize_ms_saved)


def _ratio(value: float) -> str:
    return f"{value:.0%}"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def hit_rate_table(figures: WindowFigures, agents: dict[int, Agent], scope: Scope, markers: list[Any]) -> Table:
    window = figures.window
    steps = figures.steps()
    overall = figures.overall_series()
    agent_ids = sorted(figures.series, key=lambda pk: agents[pk].slug if pk in agents else str(pk))
    header = ["bucket_start", "hits", "misses", "bypassed", "corrupt", "hit_rate"]
    multi = scope.agent_id is None and len(agent_ids) > 1
    if multi:
        header += [f"hit_rate_{agents[pk].slug}" for pk in agent_ids if pk in agents]
    rows = []
    for moment in steps:
        b = overall.get(moment, Bucket())
        rate = hit_rate(b.hits, b.misses)
        row: list[Any] = [_iso(moment), b.hits, b.misses, b.bypassed, b.corrupt, "" if rate is None else round(rate, 4)]
        if multi:
            for pk in agent_ids:
                if pk in agents:
                    a = figures.series[pk].get(moment, Bucket())
                    r = hit_rate(a.hits, a.misses)
                    row.append("" if r is None else round(r, 4))
        rows.append(row)
    lines = [
        svg.Line(
            "all agents" if multi or scope.agent_id is None else "this agent",
            [hit_rate(overall.get(m, Bucket()).hits, overall.get(m, Bucket()).misses) for m in steps],
        )
    ]
    if multi:
        for pk in agent_ids:
            if pk in agents:
                lines.append(
                    svg.Line(
                        agents[pk].slug,
                        [
                            hit_rate(
                                figures.series[pk].get(m, Bucket()).hits, figures.series[pk].get(m, Bucket()).misses
                            )
                            for m in steps
                        ],
                    )
                )
    title = f"{HIT_RATE}, {window.label} {window.step_label}"
    x_format = "%H:%M" if window.step.total_seconds() < 86400 else "%d %b"
    chart_markers = [(c.at, c.label) for c in markers]
    total = figures.total()
    note = (
        f"{format_percent(hit_rate(total.hits, total.misses))} of {format_count(total.hits + total.misses)} "
        f"lookups; beside it: {format_count(total.bypassed)} bypassed, {format_count(total.corrupt)} corrupt."
    )
    return Table(
        name=f"hit-rate-{window.key}",
        title=title,
        header=header,
        rows=rows,
        chart=svg.line_chart(
            title=title,
            desc=f"{HIT_RATE_MEANS}. {note}",
            x=steps,
            lines=lines,
            y_max=1.0,
            y_format=_ratio,
            x_format=x_format,
            markers=chart_markers,
        ),
        legend=svg.legend([line.name for line in lines], marker="TTL policy change" if chart_markers else ""),
        note=note,
    )


def outcomes_table(figures: WindowFigures) -> Table:
    t = figures.total()
    bars = [("hits", t.hits), ("misses", t.misses), ("bypassed", t.bypassed), ("corrupt", t.corrupt)]
    title = f"Lookups by outcome, {figures.window.label}"
    return Table(
        name="outcomes",
        title=title,
        header=["outcome", "lookups"],
        rows=[[name, value] for name, value in bars],
        shown=[[name, format_count(value)] for name, value in bars],
        chart=svg.bar_chart(
            title=title, desc=HIT_RATE_MEANS, bars=[(n, float(v)) for n, v in bars], value_format=format_count
        ),
        note=f"{HIT_RATE}: {format_percent(hit_rate(t.hits, t.misses))} ({HIT_RATE_MEANS}).",
    )


def tokens_table(figures: WindowFigures) -> Table:
    t = figures.total()
    title = f"Tokens served from cache and tokenized, {figures.window.label}"
    bars = [("from cache", float(t.tokens_from_cache)), ("tokenized", float(t.tokens_tokenized))]
    return Table(
        name="tokens",
        title=title,
        header=["tokens_from_cache", "tokens_tokenized", "tokenize_ms_saved"],
        rows=[[t.tokens_from_cache, t.tokens_tokenized, round(t.tokenize_ms_saved, 3)]],
        shown=[[format_count(t.tokens_from_cache), format_count(t.tokens_tokenized), _saved(t)]],
        chart=svg.bar_chart(title=title, desc=title, bars=bars, value_format=format_count),
        note=(
            f"Tokenization time saved: {_saved(t)} (tokens from cache times each tokenizer's measured cost per token)."
        ),
    )


def latency_table(figures: WindowFigures) -> Table:
    t = figures.total()
    rows: list[list[Any]] = []
    for stage in STAGES:
        counts = t.lookup_hist if stage == "lookup" else getattr(t, f"{stage}_hist")
        edges = LOOKUP_EDGES_MS if stage == "lookup" else STAGE_EDGES_MS
        p50, p95 = percentile(counts, edges, 0.5), percentile(counts, edges, 0.95)
        name = "token lookup" if stage == "lookup" else "whole turn" if stage == "total" else stage
        rows.append([name, sum(counts), None if p50 is None else round(p50, 3), None if p95 is None else round(p95, 3)])
    return Table(
        name="latency",
        title=f"Latency p50 / p95 by stage, {figures.window.label}",
        header=["stage", "turns", "p50_ms", "p95_ms"],
        rows=rows,
        shown=[[r[0], format_count(r[1]), format_ms(r[2]), format_ms(r[3])] for r in rows],
        note="Answered turns only; percentiles read from histogram buckets, as Prometheus does.",
    )


def context_table(figures: WindowFigures) -> Table:
    t = figures.total()
    counts = list(t.context_hist) + [0] * (len(CONTEXT_EDGES) + 1 - len(t.context_hist))
    labels = [f"≤{int(e)}" for e in CONTEXT_EDGES] + [f">{int(CONTEXT_EDGES[-1])}"]
    title = f"Context size (knowledge tokens per prompt), {figures.window.label}"
    mean = t.context_tokens / t.turns if t.turns else None
    return Table(
        name="context",
        title=title,
        header=["context_tokens_le", "turns"],
        rows=[[label, count] for label, count in zip(labels, counts, strict=True)],
        chart=svg.histogram(title=title, desc=title, labels=labels, counts=counts),
        note=f"Mean: {format_count(mean)} tokens over {format_count(t.turns)} answered turns.",
    )


def feedback_table(figures: WindowFigures, agents: dict[int, Agent]) -> Table:
    rows: list[list[Any]] = []
    for pk in sorted(figures.series, key=lambda pk: agents[pk].slug if pk in agents else str(pk)):
        t = figures.agent_total(pk)
        rows.append([agents[pk].slug if pk in agents else str(pk), t.feedback_up, t.feedback_down])
    return Table(
        name="feedback",
        title=f"Feedback on answers, {figures.window.label} (by when the answer was given)",
        header=["agent", "up", "down"],
        rows=rows,
        shown=[[r[0], format_count(r[1]), format_count(r[2])] for r in rows],
    )


def agents_table(figures: WindowFigures, agents: dict[int, Agent]) -> Table:
    rows: list[list[Any]] = []
    for pk in sorted(figures.series, key=lambda pk: agents[pk].slug if pk in agents else str(pk)):
        t = figures.agent_total(pk)
        rate = hit_rate(t.hits, t.misses)
        rows.append(
            [
                agents[pk].slug if pk in agents else str(pk),
                None if rate is None else round(rate, 4),
                t.hits,
                t.misses,
                t.bypassed,
                t.corrupt,
                t.turns,
                t.errors,
                t.tokens_from_cache,
                round(t.tokenize_ms_saved, 3),
            ]
        )
    return Table(
        name="agents",
        title=f"Agents, {figures.window.label}",
        header=[
            "agent",
            "hit_rate",
            "hits",
            "misses",
            "bypassed",
            "corrupt",
            "turns",
            "errors",
            "tokens_from_cache",
            "tokenize_ms_saved",
        ],
        rows=rows,
        shown=[
            [
                r[0],
                format_percent(r[1]),
                format_count(r[2]),
                format_count(r[3]),
                format_count(r[4]),
                format_count(r[5]),
                format_count(r[6]),
                format_count(r[7]),
                format_count(r[8]),
                format_saved(r[9]) if r[9] or not r[8] else NOT_MEASURED,
            ]
            for r in rows
        ],
    )


@dataclass
class Page:
    window_key: str
    now: datetime
    tables: dict[str, Table]
    agents: dict[int, Agent]

    @property
    def window(self) -> Any:
        return WINDOWS[self.window_key]


def build_page(
    scope: Scope,
    window_key: str,
    *,
    now: datetime | None = None,
    only: str | None = None,
    marker_policy: int | None = None,
) -> Page:
    """Every chart of a dashboard page (or `only` one of them) for `scope`; the selected window for the rest."""
    now = now or timezone.now()
    agents = agents_by_id()
    # One read of the not-yet-rolled-up answers serves every window of the page.
    widest = load_window_start(now)
    tail: Tail = read_tail(scope, now=now, not_before=widest)
    loaded: dict[str, WindowFigures] = {}

    def figures(key: str) -> WindowFigures:
        if key not in loaded:
            loaded[key] = load_window(key, scope, now=now, tail=tail)
        return loaded[key]

    markers_of = marker_policy or scope.policy_id
    tables: dict[str, Table] = {}
    builders: dict[str, Callable[[], Table]] = {
        "outcomes": lambda: outcomes_table(figures(window_key)),
        "tokens": lambda: tokens_table(figures(window_key)),
        "latency": lambda: latency_table(figures(window_key)),
        "context": lambda: context_table(figures(window_key)),
        "feedback": lambda: feedback_table(figures(window_key), agents),
        "agents": lambda: agents_table(figures(window_key), agents),
    }
    for key in CHART_WINDOWS:
        builders[f"hit-rate-{key}"] = lambda key=key: hit_rate_table(  # type: ignore[misc]
            figures(key), agents, scope, policy_changes(policy_id=markers_of, since=figures(key).start)
        )
    for name in CHARTS:
        if only is None or only == name:
            tables[name] = builders[name]()
    return Page(window_key=window_key, now=now, tables=tables, agents=agents)


def load_window_start(now: datetime) -> datetime:
    from dashboards.figures import window_start

    return min(window_start(WINDOWS[key], now) for key in WINDOWS)
