"""The store against a real Redis: exact, never stale, self-healing, bounded."""

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

from cachecore import codec
from cachecore.keys import text_digest, token_key
from cachecore.store import Outcome, TokenStore
from cachecore.tokenizers import ServerTokenizer, Tokenizer, get_tokenizer
from tests.cachecore.conftest import CountingTokenizer, RedisTarget, StoreFactory
from tests.support.fake_model_server import FakeModelServer

TTL = 300


def test_every_pydoc_chunk_round_trips_exactly(store: TokenStore, cl100k: Tokenizer, pydoc_chunks: list[str]) -> None:
    first = store.get_many(cl100k, pydoc_chunks, ttl=TTL)
    assert first.misses == len(pydoc_chunks)
    second = store.get_many(cl100k, pydoc_chunks, ttl=TTL)
    assert second.hits == len(pydoc_chunks)
    for text, item in zip(pydoc_chunks, second.items, strict=True):
        assert item.ids.dtype == np.uint32
        assert np.array_equal(item.ids, cl100k.encode(text))
        assert cl100k.decode(item.ids) == text


def test_full_hit_is_one_round_trip_and_partial_miss_three(store: TokenStore, counting: CountingTokenizer) -> None:
    texts = [f"chunk number {i} of a long context" for i in range(50)]
    store.get_many(counting, texts[:40], ttl=TTL)
    partial = store.get_many(counting, texts, ttl=TTL)
    assert (partial.hits, partial.misses, partial.round_trips) == (40, 10, 3)
    full = store.get_many(counting, texts, ttl=TTL)
    assert (full.hits, full.round_trips) == (50, 1)
    assert full.tokens_from_cache == sum(counting.encode(t).size for t in texts)


def test_full_hit_with_a_server_tokenizer_is_one_round_trip(
    store: TokenStore, model_server: FakeModelServer, redis_target: RedisTarget
) -> None:
    remote = ServerTokenizer(model_server.base_url)
    assert remote.n_vocab is None  # a server exposes no vocabulary, so each value gets its own width
    texts = ["plain words here", "refactoring asynchronous"]  # all IDs < 2**16, then one >= 2**16
    assert [int(remote.encode(text).max()) >= 2**16 for text in texts] == [False, True]
    store.get_many(remote, texts, ttl=TTL)
    widths = {redis_target.client().getrange(token_key(remote.fingerprint, text_digest(t)), 7, 7) for t in texts}
    assert len(widths) == 2, "the values must have different widths for this test to mean anything"

    tokenized_before = len(model_server.requests_to("/tokenize"))
    full = store.get_many(remote, texts, ttl=TTL)
    assert (full.hits, full.round_trips) == (2, 1)
    assert [remote.decode(ids) for ids in full.ids] == texts
    assert len(model_server.requests_to("/tokenize")) == tokenized_before


def test_edited_text_never_serves_old_ids(store: TokenStore, cl100k: Tokenizer) -> None:
    original = "The refund window is 30 days from delivery."
    edited = "The refund window is 31 days from delivery."
    store.get_many(cl100k, [original], ttl=TTL)
    item = store.get_many(cl100k, [edited], ttl=TTL).items[0]
    assert item.outcome is Outcome.MISS
    assert cl100k.decode(item.ids) == edited


def test_identical_text_is_tokenized_once_for_every_agent(store: TokenStore, counting: CountingTokenizer) -> None:
    store.get_many(counting, ["shared paragraph", "shared paragraph"], ttl=TTL, agent="support")
    batch = store.get_many(counting, ["shared paragraph"], ttl=TTL, agent="docs")
    assert counting.calls == 1
    assert batch.hits == 1


def _corrupt_each_way(client: redis.Redis, key: bytes, other_tokenizer_value: bytes) -> list[bytes]:
    good = client.get(key)
    assert good is not None
    flipped = bytearray(good)
    flipped[-3] ^= 0x10
    return [good[:-5], bytes(flipped), other_tokenizer_value]


def test_corrupt_values_are_deleted_counted_and_retokenized(
    store: TokenStore, counting: CountingTokenizer, redis_target: RedisTarget, tmp_path
) -> None:
    client = redis_target.client()
    text = "A paragraph whose cached value will be damaged."
    store.get_many(counting, [text], ttl=TTL)
    key = token_key(counting.fingerprint, text_digest(text))
    # A value that is valid for the same text under another tokenizer's key.
    foreign = codec.encode(counting.encode(text), key=token_key("0" * 16, text_digest(text)))
    for bad in _corrupt_each_way(client, key, foreign):
        client.set(key, bad)
        before = REGISTRY.get_sample_value("tokencache_lookups_total", {"agent": "a", "outcome": "corrupt"}) or 0
        item = store.get_many(counting, [text], ttl=TTL, agent="a").items[0]
        assert item.outcome is Outcome.CORRUPT
        assert counting.decode(item.ids) == text
        assert REGISTRY.get_sample_value("tokencache_lookups_total", {"agent": "a", "outcome": "corrupt"}) == before + 1
        assert store.get_many(counting, [text], ttl=TTL).items[0].outcome is Outcome.HIT  # rewritten


def test_values_of_another_format_version_are_replaced_never_read(
    store: TokenStore, counting: CountingTokenizer, redis_target: RedisTarget
) -> None:
    import struct
    import zlib

    text = "A chunk cached before the format upgrade."
    key = token_key(counting.fingerprint, text_digest(text))
    ids = counting.encode(text)
    body = codec.encode(ids, key=key, width=17)[17:]
    old = struct.pack("<2sBBII", b"TK", 1, 17, ids.size, zlib.crc32(body, zlib.crc32(key))).ljust(17, b"\0") + body
    redis_target.client().set(key, old)
    item = store.get_many(counting, [text], ttl=TTL).items[0]
    assert item.outcome is Outcome.CORRUPT and np.array_equal(item.ids, ids)
    assert store.get_many(counting, [text], ttl=TTL).items[0].outcome is Outcome.HIT  # rewritten


def test_sliding_expiry_renews_ttl_on_hit_and_fixed_does_not(
    store: TokenStore, cl100k: Tokenizer, redis_target
) -> None:
    client = redis_target.client()
    key = token_key(cl100k.fingerprint, text_digest("ttl text"))
    store.get_many(cl100k, ["ttl text"], ttl=100)
    store.get_many(cl100k, ["ttl text"], ttl=5000)
    assert client.ttl(key) <= 100
    store.get_many(cl100k, ["ttl text"], ttl=5000, sliding=True)
    assert client.ttl(key) > 100


def test_values_above_the_size_limit_are_not_cached(store_on: StoreFactory, redis_target, counting) -> None:
    store = store_on(redis_target.url(0), max_value_bytes=200)
    small, large = "short text", "a much longer text " * 50
    store.get_many(counting, [small, large], ttl=TTL)
    again = store.get_many(counting, [small, large], ttl=TTL)
    assert [item.outcome for item in again.items] == [Outcome.HIT, Outcome.MISS]
    assert counting.decode(again.items[1].ids) == large


def test_invalidation_by_text_by_keys_and_by_tokenizer(store: TokenStore, cl100k: Tokenizer, tmp_path) -> None:
    texts = [f"document {i}" for i in range(30)]
    store.get_many(cl100k, texts, ttl=TTL)
    assert store.invalidate_texts(cl100k, texts[:2]) == 2
    assert store.invalidate_keys([token_key(cl100k.fingerprint, text_digest(texts[2]))]) == 1
    assert store.invalidate_tokenizer(cl100k) == 27
    assert store.get_many(cl100k, texts, ttl=TTL).misses == 30


def test_invalidating_one_tokenizer_keeps_the_others(store: TokenStore, cl100k, counting, hf_tokenizer) -> None:
    store.get_many(cl100k, ["kept apart"], ttl=TTL)
    store.get_many(hf_tokenizer, ["kept apart"], ttl=TTL)
    assert store.invalidate_tokenizer(hf_tokenizer) == 1
    assert store.get_many(cl100k, ["kept apart"], ttl=TTL).hits == 1


def test_tiny_maxmemory_evicts_instead_of_failing(store_on: StoreFactory, redis_factory, cl100k, pydoc_chunks) -> None:
    tiny = redis_factory(maxmemory="2mb")
    store = store_on(tiny.url(0))
    for start in range(0, len(pydoc_chunks), 20):
        batch = store.get_many(cl100k, pydoc_chunks[start : start + 20] * 1, ttl=TTL)
        assert batch.bypassed == 0
    assert store.breaker.failures == 0
    assert tiny.client().info("stats")["evicted_keys"] > 0 or tiny.client().dbsize() < len(pydoc_chunks)


def test_empty_batch_and_empty_text(store: TokenStore, cl100k: Tokenizer) -> None:
    assert store.get_many(cl100k, [], ttl=TTL).items == []
    store.get_many(cl100k, [""], ttl=TTL)
    item = store.get_many(cl100k, [""], ttl=TTL).items[0]
    assert item.outcome is Outcome.HIT and item.ids.size == 0


def test_texts_with_special_token_strings_are_cached_as_data(store: TokenStore, cl100k: Tokenizer) -> None:
    text = "Ignore this <|endoftext|> marker"
    store.get_many(cl100k, [text], ttl=TTL)
    ids = store.get_many(cl100k, [text], ttl=TTL).items[0].ids
    assert 100257 not in ids.tolist()
    assert cl100k.decode(ids) == text


def test_precomputed_digests_serve_the_same_entries(store: TokenStore, counting: CountingTokenizer) -> None:
    texts = ["stored with its digest", "another chunk"]
    store.get_many(counting, texts, ttl=TTL)
    batch = store.get_many(counting, texts, ttl=TTL, digests=[text_digest(t) for t in texts])
    assert batch.hits == 2 and counting.calls == 2
    with pytest.raises(ValueError, match="one to one"):
        store.get_many(counting, texts, ttl=TTL, digests=[])


def test_lookups_and_tokens_are_counted_by_outcome_and_source(store: TokenStore, cl100k: Tokenizer) -> None:
    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    hits = sample("tokencache_lookups_total", {"agent": "metrics", "outcome": "hit"})
    misses = sample("tokencache_lookups_total", {"agent": "metrics", "outcome": "miss"})
    cached = sample("tokencache_tokens_total", {"source": "cache"})
    store.get_many(cl100k, ["one", "two"], ttl=TTL, agent="metrics")
    batch = store.get_many(cl100k, ["one", "two", "three"], ttl=TTL, agent="metrics")
    assert sample("tokencache_lookups_total", {"agent": "metrics", "outcome": "hit"}) == hits + 2
    assert sample("tokencache_lookups_total", {"agent": "metrics", "outcome": "miss"}) == misses + 3
    assert sample("tokencache_tokens_total", {"source": "cache"}) == cached + batch.tokens_from_cache
    assert sample("tokencache_lookup_seconds_count", {"result": "hit"}) is not None


@pytest.fixture
def hf_tokenizer(tmp_path) -> Tokenizer:
    from tests.cachecore.test_tokenizers import build_hf_tokenizer_file

    return get_tokenizer(f"hf:{build_hf_tokenizer_file(tmp_path)}")
