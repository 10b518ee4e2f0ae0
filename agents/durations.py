"""Durations as people read them: "45 s", "30 min", "1 h 30 min", "2 d 3 h".

The lowest layer that shows durations (TTL policies, recommendations); the admin and the
dashboards format theirs with this too, so a TTL reads the same everywhere.
"""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """A TTL or an age, in its largest unit and the next one if not zero: "1 h 30 min", "2 d 3 h", "45 s"."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    first = next(index for index, (_, size) in enumerate(units) if whole >= size)
    parts = [f"{whole // units[first][1]} {units[first][0]}"]
    if first + 1 < len(units):
        rest = whole % units[first][1] // units[first + 1][1]
        if rest:
            parts.append(f"{rest} {units[first + 1][0]}")
    return " ".join(parts)
