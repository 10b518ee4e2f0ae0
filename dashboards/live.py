"""Live state: every process's breaker as recorded, and what Redis says right now.

A breaker record is a process's own last word about its breaker. Records are written on a
state change, when the process starts using the cache and on its heartbeat (every 15 s,
`last_seen`); a record not seen for `STALE_AFTER` (45 s, three heartbeats) is shown as stale:
the state it holds is not confirmed, and an old "closed" is never shown as a plain "Closed".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from cachecore.models import BreakerProcess
from dashboards.figures import STALE_AFTER, breaker_state_label, format_duration


@dataclass(frozen=True)
class BreakerRow:
    host: str
    pid: int
    role: str
    state: str
    consecutive_failures: int
    last_change: datetime
    last_seen: datetime  # the record's last write, the heartbeat's included
    age: timedelta
    stale: bool

    @property
    def label(self) -> str:
        return breaker_state_label(self.state, stale=self.stale)

    @property
    def age_label(self) -> str:
        return f"{format_duration(self.age.total_seconds())} ago"

    @property
    def needs_attention(self) -> bool:
        return self.stale or self.state != BreakerProcess.State.CLOSED

    @property
    def css(self) -> str:
        return "stale" if self.stale else self.state


def breaker_rows(*, now: datetime | None = None) -> list[BreakerRow]:
    now = now or timezone.now()
    rows = []
    for record in BreakerProcess.objects.order_by("host", "pid")[:500]:
        seen = getattr(record, "last_seen", None) or record.last_change
        age = max(now - seen, timedelta(0))
        rows.append(
            BreakerRow(
                host=record.host,
                pid=record.pid,
                role=record.role,
                state=record.state,
                consecutive_failures=record.consecutive_failures,
                last_change=record.last_change,
                last_seen=seen,
                age=age,
                stale=age > STALE_AFTER,
            )
        )
    return rows


@dataclass(frozen=True)
class BreakerSummary:
    total: int
    open: int
    half_open: int
    stale: int

    @property
    def alarming(self) -> bool:
        return bool(self.open or self.half_open or self.stale)

    @property
    def text(self) -> str:
        if not self.total:
            return "no process has recorded its breaker"
        parts = [f"{self.total} process{'es' if self.total != 1 else ''}"]
        if self.open:
            parts.append(f"{self.open} open")
        if self.half_open:
            parts.append(f"{self.half_open} half-open")
        if self.stale:
            parts.append(f"{self.stale} stale record{'s' if self.stale != 1 else ''}")
        if not (self.open or self.half_open or self.stale):
            parts.append("all closed")
        return ", ".join(parts)


def breaker_summary(rows: list[BreakerRow] | None = None) -> BreakerSummary:
    rows = breaker_rows() if rows is None else rows
    return BreakerSummary(
        total=len(rows),
        open=sum(1 for r in rows if r.state == BreakerProcess.State.OPEN),
        half_open=sum(1 for r in rows if r.state == BreakerProcess.State.HALF_OPEN),
        stale=sum(1 for r in rows if r.stale),
    )


@dataclass(frozen=True)
class RedisState:
    answers: bool
    error: str
    used_memory: int | None = None
    maxmemory: int | None = None
    policy: str = ""
    evicted_keys: int | None = None
    keys: int | None = None
    connected_clients: int | None = None
    checked_at: datetime | None = None

    @property
    def memory_fraction(self) -> float | None:
        if self.used_memory is None or not self.maxmemory:
            return None
        return self.used_memory / self.maxmemory


def redis_state(*, timeout: float = 0.5) -> RedisState:
    """Ask the token cache's Redis right now, with a short timeout, outside the breaker.

    The breaker says what this process last saw; this says whether Redis answers now, so
    a page never says "unavailable" about a Redis that is back. On a cluster the figures are
    the primaries' summed (memory, maxmemory, keys, evictions, clients); under Sentinel they
    are the current primary's.
    """
    import redis

    checked_at = timezone.now()
    try:
        client = _probe_client(timeout=timeout, read_timeout=timeout)
    except Exception as exc:  # a REDIS_URL that cannot be used
        return RedisState(answers=False, error=str(exc), checked_at=checked_at)
    try:
        nodes = _per_primary(client)
        memory = [node.info("memory") for node in nodes]
        stats = [node.info("stats") for node in nodes]
        clients = [node.info("clients") for node in nodes]
        keys = sum(int(node.dbsize()) for node in nodes)
        configs = []
        for node, node_memory in zip(nodes, memory, strict=True):
            try:
                configs.append(node.config_get("maxmemory*"))
            except redis.ResponseError:  # CONFIG refused (a managed Redis, an ACL): INFO still says the memory
                configs.append(
                    {
                        "maxmemory": node_memory.get("maxmemory", 0),
                        "maxmemory-policy": node_memory.get("maxmemory_policy", ""),
                    }
                )
    except redis.RedisError as exc:
        return RedisState(answers=False, error=str(exc) or type(exc).__name__, checked_at=checked_at)
    finally:
        client.close()
    policies = {str(config.get("maxmemory-policy", "")) for config in configs}
    return RedisState(
        answers=True,
        error="",
        used_memory=sum(int(m.get("used_memory", 0)) for m in memory),
        maxmemory=sum(int(c.get("maxmemory", 0) or 0) for c in configs),
        policy=", ".join(sorted(policies)),
        evicted_keys=sum(int(s.get("evicted_keys", 0)) for s in stats),
        keys=keys,
        connected_clients=sum(int(c.get("connected_clients", 0)) for c in clients),
        checked_at=checked_at,
    )


def _probe_client(*, timeout: float, read_timeout: float) -> Any:
    """A client of its own on REDIS_URL (one server, Sentinel's primary or a cluster), one connection."""
    from django.conf import settings

    from cachecore.redis_clients import make_client

    return make_client(settings.REDIS_URL, pool_size=1, connect_timeout=timeout, read_timeout=read_timeout)


def _per_primary(client: Any) -> list[Any]:
    """The plain clients to ask: each primary of a cluster, else the client itself."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def stored_usage(state: RedisState) -> Any:
    """Entries, bytes and tokens held in Redis now (`cachecore.store.Usage`), read outside this
    process's breaker; None when Redis does not answer."""
    if not state.answers:
        return None
    from cachecore.breaker import Breaker
    from cachecore.store import TokenStore

    client = _probe_client(timeout=0.5, read_timeout=1.0)
    try:
        return TokenStore(client, breaker=Breaker(name="dashboards-usage", fail_max=1)).usage()
    finally:
        client.close()
