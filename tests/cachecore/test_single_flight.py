"""Concurrent misses of the same text are tokenized once, across threads and processes."""

import multiprocessing
import threading

import redis

from cachecore.breaker import Breaker
from cachecore.keys import lock_for, text_digest, token_key
from cachecore.store import Outcome, TokenStore
from cachecore.tokenizers import get_tokenizer
from tests.cachecore.conftest import CountingTokenizer, StoreFactory
from tests.support.clock import FakeClock

TTL = 300
TEXT = "A chunk that every request needs at the same moment."


def test_twenty_threads_missing_the_same_text_call_the_tokenizer_once(store: TokenStore, cl100k) -> None:
    slow = CountingTokenizer(cl100k, delay=0.05)
    barrier = threading.Barrier(20)
    outcomes: list[Outcome] = []

    def lookup() -> None:
        barrier.wait()
        item = store.get_many(slow, [TEXT], ttl=TTL).items[0]
        assert slow.decode(item.ids) == TEXT
        outcomes.append(item.outcome)

    threads = [threading.Thread(target=lookup) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert slow.calls == 1
    assert sorted(outcomes).count(Outcome.MISS) == 1 and len(outcomes) == 20


def _process_lookup(url: str, counter_url: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    counter = redis.Redis.from_url(counter_url)

    class Counted(CountingTokenizer):
        def encode(self, text):  # type: ignore[no-untyped-def]
            counter.incr("tokenizer-calls")
            return super().encode(text)

    tokenizer = Counted(get_tokenizer("tiktoken:cl100k_base"), delay=0.2)
    store = TokenStore.from_url(url, breaker=Breaker(name="child"))
    barrier.wait()
    results.put(store.get_many(tokenizer, [TEXT], ttl=TTL).items[0].outcome.value)


def test_two_processes_missing_the_same_text_call_the_tokenizer_once(redis_target, redis_server) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    results = context.Queue()
    children = [
        context.Process(target=_process_lookup, args=(redis_target.url(0), redis_server.url(5), barrier, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=20)
        assert child.exitcode == 0
    assert int(redis_server.client(5).get("tokenizer-calls")) == 1
    assert sorted([results.get(timeout=1), results.get(timeout=1)]) == ["hit", "miss"]


def test_a_hung_claim_holder_is_outwaited_for_lock_seconds_and_the_text_tokenized_here(
    store_on: StoreFactory, redis_target, counting: CountingTokenizer, clock: FakeClock
) -> None:
    store = store_on(redis_target.url(0), lock_seconds=3.0, clock=clock)
    key = token_key(counting.fingerprint, text_digest(TEXT))
    redis_target.client().set(lock_for(key), "hung-process", px=600_000)  # its holder never finishes
    started = clock.monotonic()
    item = store.get_many(counting, [TEXT], ttl=TTL).items[0]
    assert clock.monotonic() - started >= 3.0  # waited out on the clock, polling, not on the wall
    assert item.outcome is Outcome.MISS and counting.decode(item.ids) == TEXT
    assert store.get_many(counting, [TEXT], ttl=TTL).items[0].outcome is Outcome.HIT


def test_a_claim_that_ends_without_a_value_stops_the_wait_and_the_text_is_tokenized_here(
    store_on: StoreFactory, redis_target, counting: CountingTokenizer
) -> None:
    lock = lock_for(token_key(counting.fingerprint, text_digest(TEXT)))
    client = redis_target.client()

    class HolderDiesAfterAWhile(FakeClock):
        def __init__(self) -> None:
            super().__init__()
            self.started = self.now

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if self.now - self.started >= 0.01:
                client.delete(lock)  # its claim expired: the holder died mid-tokenize

    clock = HolderDiesAfterAWhile()
    store = store_on(redis_target.url(0), lock_seconds=3.0, clock=clock)
    client.set(lock, "crashed-process", px=600_000)
    item = store.get_many(counting, [TEXT], ttl=TTL).items[0]
    assert 0.01 <= clock.now - clock.started < 0.1  # not the whole lock_seconds
    assert item.outcome is Outcome.MISS and counting.decode(item.ids) == TEXT


def test_a_claim_that_expired_and_was_taken_over_is_left_to_its_new_owner(
    store_on: StoreFactory, redis_target, cl100k
) -> None:
    store = store_on(redis_target.url(0))
    lock = lock_for(token_key(cl100k.fingerprint, text_digest(TEXT)))
    client = redis_target.client()

    class OutlivesItsClaim(CountingTokenizer):
        def encode(self, text):  # type: ignore[no-untyped-def]
            # As if tokenizing outlasted the claim: it expired and another process took it.
            client.set(lock, "the-next-owner", px=5_000)
            return super().encode(text)

    item = store.get_many(OutlivesItsClaim(cl100k), [TEXT], ttl=TTL).items[0]
    assert item.outcome is Outcome.MISS
    assert client.get(lock) == b"the-next-owner"
    assert 0 < client.pttl(lock) <= 5_000


def test_claims_are_released_once_the_values_are_written(store: TokenStore, redis_target, counting) -> None:
    texts = [f"{TEXT} ({n})" for n in range(3)]
    store.get_many(counting, texts, ttl=TTL)
    locks = [lock_for(token_key(counting.fingerprint, text_digest(text))) for text in texts]
    assert redis_target.client().exists(*locks) == 0


def test_a_text_written_elsewhere_between_lookup_and_claim_is_a_hit_not_a_second_tokenization(
    store_on: StoreFactory, redis_target, counting: CountingTokenizer, monkeypatch
) -> None:
    # A thread that stalls after its MGET (GIL, a loaded machine) used to find the claim
    # already released by the thread that tokenized, claim it again, and tokenize twice.
    store, elsewhere = store_on(redis_target.url(0)), store_on(redis_target.url(0))
    execute = store._execute

    def late_claim(operation: str, *commands):  # type: ignore[no-untyped-def]
        if operation == "claim":
            elsewhere.get_many(counting, [TEXT], ttl=TTL)  # tokenizes, writes, releases
        return execute(operation, *commands)

    monkeypatch.setattr(store, "_execute", late_claim)
    item = store.get_many(counting, [TEXT], ttl=TTL).items[0]
    assert item.outcome is Outcome.HIT and counting.decode(item.ids) == TEXT
    assert counting.calls == 1
    assert redis_target.client().exists(lock_for(token_key(counting.fingerprint, text_digest(TEXT)))) == 0
