"""What a lookup returns: each text's IDs and how they were obtained, and what Redis holds."""

import enum
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np


class Outcome(enum.StrEnum):
    HIT = "hit"  # IDs decoded from the cache
    MISS = "miss"  # not cached: tokenized here (and written back)
    BYPASS = "bypass"  # Redis unavailable or breaker open: tokenized without the cache
    CORRUPT = "corrupt"  # a bad value was found, deleted, and the text tokenized


class Lookup(NamedTuple):
    ids: np.ndarray  # uint32
    outcome: Outcome


@dataclass(frozen=True)
class LookupBatch:
    """The result of one `get_many`: IDs and outcomes as parallel lists, one per text.

    Kept as two lists rather than one object per text because building 30 small
    objects was a measurable share of a hit (docs/cachecore.md, "Benchmark"); `items` pairs them up on first
    use for callers that want `item.ids` / `item.outcome`.
    """

    ids: list[np.ndarray]  # uint32 arrays, in the order of the texts
    outcomes: list[Outcome]
    round_trips: int
    seconds: float

    @cached_property
    def items(self) -> list[Lookup]:
        return list(map(Lookup, self.ids, self.outcomes))

    @property
    def hits(self) -> int:
        return self.outcomes.count(Outcome.HIT)

    @property
    def misses(self) -> int:
        return self.outcomes.count(Outcome.MISS)

    @property
    def bypassed(self) -> int:
        return self.outcomes.count(Outcome.BYPASS)

    @property
    def corrupt(self) -> int:
        return self.outcomes.count(Outcome.CORRUPT)

    @property
    def tokens_from_cache(self) -> int:
        return sum(ids.size for ids, outcome in zip(self.ids, self.outcomes, strict=True) if outcome is Outcome.HIT)

    @property
    def tokens_tokenized(self) -> int:
        return sum(ids.size for ids, outcome in zip(self.ids, self.outcomes, strict=True) if outcome is not Outcome.HIT)


@dataclass(frozen=True)
class Usage:
    entries: int
    bytes: int
    tokens: int
    complete: bool  # False when the scan stopped at max_keys
