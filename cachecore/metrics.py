"""Prometheus metrics of the token cache, defined once, next to the code they measure.

With several server and worker processes, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR) sums counters and histograms across processes at
/metrics. The breaker gauge is per process by nature: it carries a `process` label
and `livemostrecent` drops the series of processes that have exited, once
`mark_process_dead` has run for them (at exit, or when a later process prunes them).
"""

import os

from prometheus_client import Counter, Gauge, Histogram, multiprocess

LOOKUPS = Counter(
    "tokencache_lookups_total",
    "Texts looked up in the token cache, by calling agent and outcome.",
    ["agent", "outcome"],
)
LOOKUP_SECONDS = Histogram(
    "tokencache_lookup_seconds",
    "Wall time of one get_many call, by result: hit (every text from the cache), "
    "miss (some tokenized), bypass (Redis unavailable, all tokenized).",
    ["result"],
    buckets=(
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
    ),
)
TOKENS = Counter(
    "tokencache_tokens_total",
    "Token IDs served, by source: cache or tokenizer.",
    ["source"],
)
BREAKER_STATE = Gauge(
    "tokencache_breaker_state",
    "Circuit breaker state per process: 0 closed, 1 half-open, 2 open.",
    ["process"],
    multiprocess_mode="livemostrecent",
)
VALUE_BYTES = Histogram(
    "tokencache_value_bytes",
    "Size of token values written to Redis.",
    buckets=(64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304),
)
REDIS_ERRORS = Counter(
    "tokencache_redis_errors_total",
    "Redis calls that failed (and counted against the breaker), by operation.",
    ["operation"],
)
SKIPPED_WRITES = Counter(
    "tokencache_skipped_writes_total",
    "Tokenized texts not written to Redis, by reason.",
    ["reason"],
)


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges from /metrics (multiprocess mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
