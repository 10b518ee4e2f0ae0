"""The one definition of each figure, and its units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboards.figures import (
    WINDOWS,
    breaker_state_label,
    bucket_index,
    floor_to,
    format_bytes,
    format_duration,
    format_ms,
    format_percent,
    hit_rate,
    percentile,
    window_start,
)


def test_the_hit_rate_counts_hits_against_misses_only() -> None:
    assert hit_rate(hits=34, misses=66) == 0.34
    assert hit_rate(hits=0, misses=0) is None


@pytest.mark.parametrize(
    ("ms", "shown"), [(58.0953699999327, "58.1 ms"), (0.04, "0.0 ms"), (None, "—"), (12_345.0, "12.3 s")]
)
def test_times_read_in_ms_with_one_decimal(ms: float | None, shown: str) -> None:
    assert format_ms(ms) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (45, "45 s"),
        (60, "1 min"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
        (3639, "1 h"),
        (86400 * 2 + 3600 * 3, "2 d 3 h"),
    ],
)
def test_ttls_and_ages_read_in_human_units(seconds: int, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_sizes_and_rates_read_in_human_units() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KB"
    assert format_bytes(500 * 1024 * 1024) == "500.0 MB"
    assert format_percent(0.3449) == "34%" and format_percent(None) == "—"


def test_percentiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    edges = (1.0, 2.0, 4.0)
    assert percentile([0, 10, 0, 0], edges, 0.5) == 1.5
    assert percentile([10, 0, 0, 0], edges, 0.95) == pytest.approx(0.95)
    assert percentile([0, 0, 0, 5], edges, 0.5) == 4.0  # above the last edge: the last edge
    assert percentile([0, 0, 0, 0], edges, 0.5) is None
    assert bucket_index(2.0, edges) == 1 and bucket_index(9.0, edges) == 3


def test_windows_are_whole_buckets_ending_with_the_current_one() -> None:
    now = datetime(2026, 11, 30, 10, 42, 17, tzinfo=UTC)
    assert window_start(WINDOWS["hour"], now) == datetime(2026, 11, 30, 9, 43, tzinfo=UTC)
    assert window_start(WINDOWS["day"], now) == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)
    assert window_start(WINDOWS["month"], now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert floor_to(now, timedelta(minutes=1)) == datetime(2026, 11, 30, 10, 42, tzinfo=UTC)
    assert {w.label for w in WINDOWS.values()} == {"last hour", "last 24 h", "last 7 days", "last 30 days"}


def test_a_stale_record_never_reads_as_a_plain_state() -> None:
    assert breaker_state_label("closed", stale=False) == "Closed"
    assert breaker_state_label("closed", stale=True) == "Closed (stale record)"
    assert breaker_state_label("half-open", stale=False) == "Half-open"
