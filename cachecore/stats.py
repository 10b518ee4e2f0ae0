"""CacheStats: the figures the admin shows, summed over every process.

Lookup counts and latencies come from the Prometheus metrics, read through the
multiprocess directory when PROMETHEUS_MULTIPROC_DIR is set (so web and worker
processes are all included) and from this process's registry otherwise. What is
stored right now (entries, bytes, tokens) is read from Redis itself.
"""

import os
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from cachecore.store import TokenStore, Usage, default_store


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    corrupt: int
    bypassed: int
    tokens_from_cache: int
    tokens_tokenized: int
    mean_hit_seconds: float | None  # get_many calls served entirely from the cache
    mean_miss_seconds: float | None  # get_many calls that tokenized something
    stored: Usage | None  # None when Redis is unreachable

    @property
    def lookups(self) -> int:
        return self.hits + self.misses + self.corrupt + self.bypassed

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None

    @property
    def mean_hit_ms(self) -> float | None:
        return self.mean_hit_seconds * 1000 if self.mean_hit_seconds is not None else None

    @property
    def mean_miss_ms(self) -> float | None:
        return self.mean_miss_seconds * 1000 if self.mean_miss_seconds is not None else None

    @property
    def tokens_cached(self) -> int | None:
        return self.stored.tokens if self.stored else None

    @property
    def bytes(self) -> int | None:
        return self.stored.bytes if self.stored else None

    @property
    def bytes_per_token(self) -> float | None:
        return self.stored.bytes / self.stored.tokens if self.stored and self.stored.tokens else None


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def collect_stats(*, store: TokenStore | None = None, include_redis: bool = True) -> CacheStats:
    """Current figures; reads Redis (headers only, bounded) unless `include_redis` is False."""
    sums: dict[tuple[str, str], float] = {}
    for family in _registry().collect():
        if not family.name.startswith("tokencache_"):
            continue
        for sample in family.samples:
            label = sample.labels.get("outcome") or sample.labels.get("source") or sample.labels.get("result", "")
            sums[(sample.name, label)] = sums.get((sample.name, label), 0.0) + sample.value

    def total(name: str, label: str) -> int:
        return int(sums.get((name, label), 0))

    def mean(result: str) -> float | None:
        count = sums.get(("tokencache_lookup_seconds_count", result), 0.0)
        return sums.get(("tokencache_lookup_seconds_sum", result), 0.0) / count if count else None

    return CacheStats(
        hits=total("tokencache_lookups_total", "hit"),
        misses=total("tokencache_lookups_total", "miss"),
        corrupt=total("tokencache_lookups_total", "corrupt"),
        bypassed=total("tokencache_lookups_total", "bypass"),
        tokens_from_cache=total("tokencache_tokens_total", "cache"),
        tokens_tokenized=total("tokencache_tokens_total", "tokenizer"),
        mean_hit_seconds=mean("hit"),
        mean_miss_seconds=mean("miss"),
        stored=(store or default_store()).usage() if include_redis else None,
    )
