"""Fixtures for the cache core: real Redis always, tokenizers that count their calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest
from redis.cluster import RedisCluster

from cachecore.breaker import Breaker
from cachecore.clock import SYSTEM, Clock
from cachecore.store import TokenStore
from cachecore.tokenizers import Tokenizer, get_tokenizer
from tests.redis_cluster import ClusterDeployment
from tests.redis_process import RedisProcess
from tests.support.clock import FakeClock

# The production default: tests that wait for a reset move a FakeClock past it.
TEST_RESET_SECONDS = 60.0


class CountingTokenizer:
    """Wraps a real tokenizer; counts encode calls and can be made slow."""

    def __init__(self, inner: Tokenizer, *, delay: float = 0.0) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.fingerprint = inner.fingerprint
        self.n_vocab = inner.n_vocab
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def encode(self, text: str) -> np.ndarray:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.inner.encode(text)

    def decode(self, ids: np.ndarray | Sequence[int]) -> str:
        return self.inner.decode(ids)


@pytest.fixture(scope="session")
def cl100k() -> Tokenizer:
    return get_tokenizer("tiktoken:cl100k_base")


@pytest.fixture
def counting(cl100k: Tokenizer) -> CountingTokenizer:
    return CountingTokenizer(cl100k)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


StoreFactory = Callable[..., TokenStore]


@pytest.fixture
def store_on() -> Iterator[StoreFactory]:
    """Build a TokenStore on any Redis URL with its own breaker; `clock` drives both."""
    stores: list[TokenStore] = []

    def build(
        url: str,
        *,
        fail_max: int = 5,
        reset_seconds: float = TEST_RESET_SECONDS,
        clock: Clock = SYSTEM,
        **options: object,
    ) -> TokenStore:
        breaker = Breaker(name="test", fail_max=fail_max, reset_seconds=reset_seconds, clock=clock)
        timeouts = {name: options.pop(name) for name in ("connect_timeout", "read_timeout") if name in options}
        store = TokenStore.from_url(url, breaker=breaker, clock=clock, **timeouts, **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield build
    for store in stores:
        if isinstance(store.client, RedisCluster):
            store.client.close()
        else:
            store.client.connection_pool.disconnect()


class ClusterTarget:
    """The session's cluster as a test sees it: `url()` for stores, `client()` to look inside."""

    def __init__(self, cluster: ClusterDeployment) -> None:
        self.cluster = cluster
        self._client = cluster.client()

    def url(self, db: int = 0) -> str:
        return self.cluster.url(db)

    def client(self, db: int = 0):  # type: ignore[no-untyped-def]
        return self._client


RedisTarget = RedisProcess | ClusterTarget


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.cluster)])
def redis_target(request: pytest.FixtureRequest, redis_server: RedisProcess) -> RedisTarget:
    """The cache core's specifications run on one Redis and (`make test-cluster`) on a cluster."""
    if request.param == "single":
        return redis_server
    cluster: ClusterDeployment = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return ClusterTarget(cluster)


@pytest.fixture
def store(store_on: StoreFactory, redis_target: RedisTarget) -> TokenStore:
    return store_on(redis_target.url(0))


@pytest.fixture(scope="session")
def pydoc_chunks(cl100k: Tokenizer) -> list[str]:
    """The Python documentation shipped with Python, cut into ~300-token chunks of text."""
    from pydoc_data.topics import topics

    chunks: list[str] = []
    for name in sorted(topics):
        ids = cl100k.encode(topics[name])
        for start in range(0, len(ids), 300):
            chunks.append(cl100k.decode(ids[start : start + 300]))
    return chunks
