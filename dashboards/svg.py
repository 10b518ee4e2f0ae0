"""Charts drawn on the server as inline SVG: no script, no network, scaled by the page's width.

Every text placed in a chart goes through `escape`; a chart has a <title> and a <desc>,
and the page puts the same numbers in a table beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 26
PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#57606a")


@dataclass(frozen=True)
class Line:
    name: str
    values: Sequence[float | None]


def _num(value: float) -> str:
    return f"{value:.1f}"


def line_chart(
    *,
    title: str,
    desc: str,
    x: Sequence[datetime],
    lines: Sequence[Line],
    y_max: float,
    y_format: Callable[[float], str],
    x_format: str,
    markers: Sequence[tuple[datetime, str]] = (),
) -> SafeString:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    count = max(len(x), 2)
    y_max = y_max or 1.0

    def px(index: float) -> float:
        return LEFT + plot_w * index / (count - 1)

    def py(value: float) -> float:
        return TOP + plot_h * (1 - min(value, y_max) / y_max)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet"><title>{escape(title)}</title><desc>{escape(desc)}</desc>'
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        y = py(y_max * fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_num(y)}" y2="{_num(y)}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 4}" y="{_num(y + 4)}" text-anchor="end">'
            f"{escape(y_format(y_max * fraction))}</text>"
        )
    if x:
        for index in sorted({0, len(x) // 2, len(x) - 1}):
            anchor = "start" if index == 0 else "end" if index == len(x) - 1 else "middle"
            parts.append(
                f'<text class="axis" x="{_num(px(index))}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                f"{escape(x[index].strftime(x_format))}</text>"
            )
    if len(x) >= 2:
        span = (x[-1] - x[0]).total_seconds() or 1.0
        step = (x[1] - x[0]).total_seconds()
        for moment, label in markers:
            offset = (moment - x[0]).total_seconds() / span
            if offset > 1 and (moment - x[-1]).total_seconds() < step:
                offset = 1.0  # within the last bucket, drawn at its point
            if 0 <= offset <= 1:
                mx = _num(LEFT + plot_w * offset)
                parts.append(
                    f'<g class="marker"><line x1="{mx}" x2="{mx}" y1="{TOP}" y2="{TOP + plot_h}"/>'
                    f"<title>{escape(label)}</title></g>"
                )
    for number, line in enumerate(lines):
        colour = PALETTE[number % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for index, value in enumerate(line.values):
            if value is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(f"{_num(px(index))},{_num(py(value))}")
        for points in segments:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            elif points:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def legend(names: Sequence[str], *, marker: str = "") -> SafeString:
    items = "".join(
        f'<li><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>{escape(name)}</li>'
        for i, name in enumerate(names)
    )
    if marker:
        items += f'<li><span class="swatch swatch--marker"></span>{escape(marker)}</li>'
    return mark_safe(f'<ul class="legend">{items}</ul>')  # noqa: S308 - names are escaped


def bar_chart(
    *, title: str, desc: str, bars: Sequence[tuple[str, float]], value_format: Callable[[float], str]
) -> SafeString:
    """Horizontal bars, one per label; lengths relative to the largest."""
    row = 26
    height = max(row * len(bars) + 8, 34)
    label_w = 90
    largest = max((value for _, value in bars), default=0) or 1
    parts = [
        f'<svg class="chart bars" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
    ]
    for index, (label, value) in enumerate(bars):
        y = 4 + index * row
        length = (WIDTH - label_w - 80) * value / largest
        colour = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<text class="axis" x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{_num(max(length, 0))}" height="18" fill="{colour}"/>'
            f'<text class="value" x="{_num(label_w + max(length, 0) + 6)}" y="{y + 16}">'
            f"{escape(value_format(value))}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def histogram(*, title: str, desc: str, labels: Sequence[str], counts: Sequence[int]) -> SafeString:
    """Vertical bars of a distribution, one per bucket."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    largest = max(counts, default=0) or 1
    width = plot_w / max(len(counts), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
        f'<text class="axis" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{largest}</text>'
    ]
    for index, (label, count) in enumerate(zip(labels, counts, strict=False)):
        h = plot_h * count / largest
        x = LEFT + index * width
        parts.append(
            f'<rect x="{_num(x + 2)}" y="{_num(TOP + plot_h - h)}" width="{_num(max(width - 4, 1))}" '
            f'height="{_num(h)}" fill="{PALETTE[0]}"><title>{escape(label)}: {count}</title></rect>'
        )
        if index % max(1, len(counts) // 5) == 0:
            parts.append(
                f'<text class="axis" x="{_num(x + width / 2)}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped
