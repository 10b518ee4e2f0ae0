"""Prometheus metrics of the token cache, defined once, next to the code they measure.

With several server and worker processes, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR) sums counters and histograms across processes at
/metrics. The breaker gauge is per process by nature: it carries a `process` label
and `livemostrecent` drops the series of processes that have exited, once
`mark_process_dead` has run for them (at exit, or when a later process prunes them).
"""

import logging
import os

from prometheus_client import Counter, Gauge, Histogram, multiprocess

LOOKUPS = Counter(
    "tokencache_lookups_total",
    "Texts looked up in the token cache, by calling agent and outcome.",
    ["agent", "outcome"],
)
LATENCY_BUCKETS = (
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
)
LOOKUP_SECONDS = Histogram(
    "tokencache_lookup_seconds",
    "Wall time of one get_many call, by result: hit (every text from the cache), "
    "miss (some tokenized), bypass (Redis unavailable, all tokenized).",
    ["result"],
    buckets=LATENCY_BUCKETS,
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


# Per-agent figures of chat turns, observed once per answered turn by the caller that knows
# the agent (the cache core only sees a label). The dashboards' rollups use the same buckets.
TURN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTEXT_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
TURNS = Counter(
    "tokencache_turns_total", "Chat turns answered, by agent and status (ok or error).", ["agent", "status"]
)
AGENT_LOOKUP_SECONDS = Histogram(
    "tokencache_agent_lookup_seconds",
    "Wall time of the token lookup of one chat turn (one get_many call), by agent.",
    ["agent"],
    buckets=LATENCY_BUCKETS,
)
TURN_SECONDS = Histogram(
    "tokencache_turn_seconds",
    "Wall time of a chat turn's stages (retrieval, lookup, generation) and of the whole turn (total), by agent.",
    ["agent", "stage"],
    buckets=TURN_BUCKETS,
)
CONTEXT_TOKENS = Histogram(
    "tokencache_context_tokens",
    "Knowledge tokens placed in one chat turn's prompt, by agent.",
    ["agent"],
    buckets=CONTEXT_TOKEN_BUCKETS,
)


def observe_turn(
    *, agent: str, ok: bool, lookup_ms: float = 0.0, context_tokens: int = 0, stage_ms: dict[str, float] | None = None
) -> None:
    """Count one chat turn of `agent`; an answered turn (`ok`) also records its figures.

    Never raises: a metrics failure must not fail a chat turn that has been stored.
    """
    try:
        TURNS.labels(agent=agent, status="ok" if ok else "error").inc()
        if not ok:
            return
        AGENT_LOOKUP_SECONDS.labels(agent=agent).observe(lookup_ms / 1000)
        CONTEXT_TOKENS.labels(agent=agent).observe(context_tokens)
        for stage, ms in (stage_ms or {}).items():
            TURN_SECONDS.labels(agent=agent, stage=stage).observe(ms / 1000)
    except Exception:  # pragma: no cover - prometheus_client only fails on a broken multiproc dir
        logging.getLogger(__name__).exception("could not record the metrics of a chat turn")


def mark_process_dead(pid: int) -> None:
    """Drop a finished process's live gauges from /metrics (multiprocess mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
