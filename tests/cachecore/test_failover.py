"""Past one Redis: a primary killed under load never fails a lookup, and the cache comes back.

Every lookup of the load is answered with exact IDs (bypassed while the primary is gone,
counted as such); the replica takes over; hits resume on the same store, nothing restarted.
Run by `make test-cluster` (the `cluster` marker).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from cachecore.keys import text_digest, token_key
from cachecore.store import Outcome, TokenStore
from cachecore.tokenizers import Tokenizer
from tests.cachecore.conftest import StoreFactory
from tests.redis_cluster import ClusterDeployment, RedisNode, SentinelDeployment

pytestmark = pytest.mark.cluster

TTL = 600
LOAD_THREADS = 4
CHUNKS_PER_TURN = 8
# Long enough for failure detection (1 s node timeout) and promotion; the load stops itself.
MAX_LOAD_SECONDS = 30.0


class Load:
    """Threads doing lookups of random chunk batches until stopped; they record every outcome."""

    def __init__(self, store: TokenStore, tokenizer: Tokenizer, chunks: list[str]) -> None:
        self.store, self.tokenizer, self.chunks = store, tokenizer, chunks
        self.expected = {text: tokenizer.encode(text) for text in chunks}
        self.outcomes: list[tuple[float, Outcome]] = []
        self.errors: list[BaseException] = []
        self.wrong = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(seed,)) for seed in range(LOAD_THREADS)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        deadline = time.monotonic() + MAX_LOAD_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            texts = rng.sample(self.chunks, CHUNKS_PER_TURN)
            try:
                batch = self.store.get_many(self.tokenizer, texts, ttl=TTL, agent="failover")
            except BaseException as exc:  # a lookup that raises is a turn that fails
                self.errors.append(exc)
                return
            now = time.monotonic()
            with self._lock:
                for text, ids, outcome in zip(texts, batch.ids, batch.outcomes, strict=True):
                    self.wrong += not np.array_equal(ids, self.expected[text])
                    self.outcomes.append((now, outcome))
            time.sleep(0.005)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=MAX_LOAD_SECONDS + 10)

    def since(self, moment: float) -> Counter[Outcome]:
        with self._lock:
            return Counter(outcome for at, outcome in self.outcomes if at >= moment)

    def wait_for_hits_only(self, *, after: float, window: float = 0.5, timeout: float = 25.0) -> float:
        """The moment from which a whole `window` of lookups were all hits; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(window)
            start = max(after, time.monotonic() - window)
            recent = self.since(start)
            if recent and set(recent) == {Outcome.HIT} and time.monotonic() - start >= window * 0.9:
                return start
        raise AssertionError(f"hits did not resume within {timeout} s: {dict(self.since(after))}")


def _store(store_on: StoreFactory, url: str) -> TokenStore:
    # Short timeouts and a one-second breaker reset so the test sees the whole cycle quickly.
    return store_on(url, fail_max=3, reset_seconds=1.0, connect_timeout=0.5, read_timeout=0.5)


def test_a_cluster_primary_killed_under_load_bypasses_then_its_replica_serves_hits(
    cluster_factory: Callable[[], ClusterDeployment], store_on: StoreFactory, cl100k: Tokenizer, pydoc_chunks: list[str]
) -> None:
    cluster = cluster_factory()
    store = _store(store_on, cluster.url())
    chunks = pydoc_chunks[:120]
    for start in range(0, len(chunks), 30):
        store.get_many(cl100k, chunks[start : start + 30], ttl=TTL)  # warm every chunk
    victim = cluster.node_for(token_key(cl100k.fingerprint, text_digest(chunks[0])))
    replica_ports = _replicas_of(cluster, victim)

    with Load(store, cl100k, chunks) as load:
        time.sleep(0.5)
        assert set(load.since(0)) == {Outcome.HIT}
        killed_at = time.monotonic()
        victim.kill()
        resumed_at = load.wait_for_hits_only(after=killed_at + 0.1)

    assert not load.errors and load.wrong == 0  # every lookup answered, with exact IDs
    during = load.since(killed_at)
    assert during[Outcome.BYPASS] > 0, dict(during)
    print(f"cluster: hits only again {resumed_at - killed_at:.1f} s after the kill; since then {dict(during)}")
    promoted = [node for node in cluster.nodes if node.port in replica_ports and node.running]
    assert promoted and promoted[0].info_role() == "master"
    assert resumed_at - killed_at < 20


def _replicas_of(cluster: ClusterDeployment, primary: RedisNode) -> set[int]:
    replicas = primary.client().info("replication")
    return {
        int(value["port"]) for key, value in replicas.items() if key.startswith("slave") and isinstance(value, dict)
    }


def test_a_sentinel_primary_killed_under_load_bypasses_then_the_new_primary_serves_hits(
    sentinel_factory: Callable[[], SentinelDeployment],
    store_on: StoreFactory,
    cl100k: Tokenizer,
    pydoc_chunks: list[str],
) -> None:
    deployment = sentinel_factory()
    store = _store(store_on, deployment.url(0))
    chunks = pydoc_chunks[:120]
    for start in range(0, len(chunks), 30):
        store.get_many(cl100k, chunks[start : start + 30], ttl=TTL)
    old_port = deployment.current_primary_port()
    assert old_port == deployment.primary.port

    with Load(store, cl100k, chunks) as load:
        time.sleep(0.5)
        assert set(load.since(0)) == {Outcome.HIT}
        killed_at = time.monotonic()
        deployment.primary.kill()
        resumed_at = load.wait_for_hits_only(after=killed_at + 0.1)

    assert not load.errors and load.wrong == 0
    during = load.since(killed_at)
    assert during[Outcome.BYPASS] > 0
    print(f"sentinel: hits only again {resumed_at - killed_at:.1f} s after the kill; since then {dict(during)}")
    assert deployment.current_primary_port() == deployment.replica.port
    assert deployment.replica.info_role() == "master"
    assert resumed_at - killed_at < 20
