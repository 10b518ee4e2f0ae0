"""Durations as people read them: "45 s", "30 min", "1 h 30 min", "2 d".

The lowest layer that shows durations (TTL policies, recommendations); the admin and the
dashboards format theirs with this too, so a TTL reads the same everywhere.
"""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """A TTL or an age, in at most two units: "1 h", "30 min", "1 h 30 min", "45 s", "2 d"."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount:
            parts.append(f"{amount} {unit}")
        if len(parts) == 2:
            break
    return " ".join(parts)
