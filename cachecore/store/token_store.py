"""TokenStore: token IDs of many texts in one Redis round trip, safe when Redis fails.

Round trips per `get_many` call, whatever the number of texts:
  full hit        1   MGET
  partial miss    3   MGET; claim the missing keys (SET NX PX) and read them again,
                      deleting corrupt values; write the tokenized values back
                      (SET EX) and release the claims
  contended miss  +1 per poll while another process tokenizes the same text
A Lua script could claim missing keys inside the first round trip (2 on a miss),
but it would run on every call, hits included, and costs Redis more CPU than the
whole hit path may take, to save one round trip on a path that already pays for
tokenizing (figures: docs/cachecore.md, "Round trips").

Every round trip goes through the breaker. A Redis error or an open breaker never
reaches the caller: the affected texts are tokenized here and come back as BYPASS.

On a Redis Cluster (`RedisCluster` client) each round trip becomes one pipelined batch
per node involved, written to every node before any reply is read, so the nodes work in
parallel and a trip costs about as long as the slowest node's: multi-key commands (MGET,
DEL, UNLINK, the release script) are split per hash slot and their replies put back in
order. Keys keep their layout (no hash tags): a text's claim usually lives on another
node than its value, which single-flight does not need (docs/deploy.md).
"""

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.utils import HIREDIS_AVAILABLE

from cachecore import codec, metrics
from cachecore.breaker import Breaker, BreakerOpen
from cachecore.clock import SYSTEM, Clock
from cachecore.keys import ALL_TOKENS_PATTERN, lock_for, text_digest, token_key, tokenizer_pattern
from cachecore.store.results import Lookup, LookupBatch, Outcome, Usage
from cachecore.tokenizers import Tokenizer
from cachecore.tokenizers.base import encode_many

logger = logging.getLogger(__name__)


# prometheus_client's `.labels()` takes a lock and builds a key on every call (three calls
# per lookup, a visible share of a hit: docs/cachecore.md); the child it returns is the same
# object every time, so keep it. Safe after a fork: multiprocess-mode values re-check the pid
# on every update.
_LOOKUPS: dict[tuple[str, Outcome], Any] = {}
_TOKENS_FROM = {source: metrics.TOKENS.labels(source=source) for source in ("cache", "tokenizer")}
_SECONDS_BY_RESULT = {result: metrics.LOOKUP_SECONDS.labels(result=result) for result in ("hit", "miss", "bypass")}


def _lookups(agent: str, outcome: Outcome) -> Any:
    try:
        return _LOOKUPS[agent, outcome]
    except KeyError:
        child = _LOOKUPS[agent, outcome] = metrics.LOOKUPS.labels(agent=agent, outcome=outcome.value)
        return child


# hiredis packs an MGET in C; redis-py's `pack_commands` spends most of its time checking
# every argument's type in Python (about 2.5 times as long: docs/cachecore.md). Same bytes
# on the wire.
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack
else:  # pragma: no cover - hiredis is pinned in requirements.txt
    _hiredis_pack = None


# Deletes each claim only while it still holds this lookup's token. A claim can expire
# while its owner tokenizes a long text and be taken by another process; a plain DEL
# would then end that process's claim and let a third tokenize the same text again.
_RELEASE_OWN_CLAIMS = (
    "for _, key in ipairs(KEYS) do if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end end return 0"
)


def _release_own(locks: Sequence[bytes], token: str) -> tuple[Any, ...]:
    """The command that releases `locks` where they still hold `token` (one round trip's part)."""
    return ("EVAL", _RELEASE_OWN_CLAIMS, len(locks), *locks, token)


# Commands whose every argument is a key, and how their per-slot replies combine.
_ALL_KEYS_LISTED = {"MGET": "list", "DEL": "sum", "UNLINK": "sum", "EXISTS": "sum"}

# One command's share of a cluster round trip: (node name, index in that node's batch,
# positions of its keys in the original command).
_Part = tuple[str, int, list[int]]


def _slot_of(key: bytes | str) -> int:
    return key_slot(key.encode() if isinstance(key, str) else key)


def _split_by_slot(command: tuple[Any, ...]) -> list[tuple[int, tuple[Any, ...], list[int]]]:
    """`command` as one command per hash slot: (slot, command, positions of its keys)."""
    name = command[0]
    if name in _ALL_KEYS_LISTED:
        groups: dict[int, list[int]] = {}
        for position, key in enumerate(command[1:]):
            groups.setdefault(_slot_of(key), []).append(position)
        return [(slot, (name, *[command[1 + p] for p in positions]), positions) for slot, positions in groups.items()]
    if name == "EVAL":  # the release script: the same ARGV for every slot's share of KEYS
        count = int(command[2])
        keys, argv = command[3 : 3 + count], command[3 + count :]
        groups = {}
        for position, key in enumerate(keys):
            groups.setdefault(_slot_of(key), []).append(position)
        return [
            (slot, ("EVAL", command[1], len(positions), *[keys[p] for p in positions], *argv), positions)
            for slot, positions in groups.items()
        ]
    return [(_slot_of(command[1]), command, [0])]  # one key, in first place (SET, EXPIRE, STRLEN, GETRANGE)


def _merge(command: tuple[Any, ...], parts: list[_Part], replies: dict[str, list[Any]]) -> Any:
    how = _ALL_KEYS_LISTED.get(command[0])
    if how == "list":
        merged: list[Any] = [None] * (len(command) - 1)
        for node, index, positions in parts:
            for position, value in zip(positions, replies[node][index], strict=True):
                merged[position] = value
        return merged
    if how == "sum":
        return sum(int(replies[node][index]) for node, index, _ in parts)
    node, index, _ = parts[0]
    return replies[node][index]


def _pack(connection: Any, commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    if _hiredis_pack is not None:
        return [b"".join([_hiredis_pack(command) for command in commands])]
    return cast(list[bytes], connection.pack_commands(commands))


def _id_width(tokenizer: Tokenizer) -> int | None:
    n_vocab = getattr(tokenizer, "n_vocab", None)
    return codec.width_for(n_vocab - 1) if n_vocab else None


class TokenStore:
    """Token IDs cached in one Redis, behind one breaker. Thread-safe.

    Commands are sent on connections borrowed from the client's pool rather than
    through `client.execute_command`: that skips redis-py's retry policy (the
    breaker decides what happens after a failure, and retries would multiply a
    5-second timeout) and its per-command bookkeeping, which is a measurable share
    of a sub-millisecond hit.
    """

    def __init__(
        self,
        client: "redis.Redis | RedisCluster",
        *,
        breaker: Breaker,
        max_value_bytes: int = 1024 * 1024,
        lock_seconds: float = 3.0,
        clock: Clock = SYSTEM,
    ) -> None:
        self.client = client
        self.breaker = breaker
        self.max_value_bytes = max_value_bytes
        # How long a claim on a missing text lasts; waiters give up after as long.
        self.lock_seconds = lock_seconds
        self.clock = clock  # paces and ends the wait on another lookup's claim
        self._cluster = client if isinstance(client, RedisCluster) else None
        # Set after a failed cluster trip: the slot map is re-read (CLUSTER SLOTS) before the
        # next one, so a replica promoted by a failover is found without a restart.
        self._topology_stale = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        breaker: Breaker,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        **options: Any,
    ) -> "TokenStore":
        """A store on its own bounded pool (tests, benchmarks, a second Redis).

        `url` may name one server, a cluster or a Sentinel-managed primary
        (`cachecore.redis_clients`).
        """
        from cachecore.redis_clients import make_client

        client = make_client(url, pool_size=pool_size, connect_timeout=connect_timeout, read_timeout=read_timeout)
        return cls(client, breaker=breaker, **options)

    # -- Redis access ---------------------------------------------------------------

    def _execute(self, operation: str, *commands: tuple[Any, ...]) -> list[Any]:
        """Send `commands` in one round trip through the breaker; raw replies in order.

        Raises BreakerOpen (no network touched) or RedisError (counted, logged).
        """
        if self._cluster is not None:
            return self._execute_cluster(operation, commands)
        with self.breaker.guard():
            pool = cast(redis.Redis, self.client).connection_pool
            try:
                connection = pool.get_connection()
            except RedisError as exc:
                self._failed(operation, exc)
                raise
            try:
                connection.send_packed_command(_pack(connection, commands))
                return [connection.read_response() for _ in commands]
            except BaseException as exc:
                # A half-read reply would poison the next user of this connection.
                connection.disconnect()
                if isinstance(exc, RedisError):
                    self._failed(operation, exc)
                raise
            finally:
                pool.release(connection)

    def _execute_cluster(self, operation: str, commands: Sequence[tuple[Any, ...]], *, node: Any = None) -> list[Any]:
        """`_execute` on a cluster: one pipelined batch per node, all sent before any is read.

        `node` sends every command to that node as is (SCAN of one primary).
        """
        cluster = cast(RedisCluster, self._cluster)
        with self.breaker.guard():
            borrowed: dict[str, tuple[Any, Any]] = {}  # node name -> (pool, connection)
            try:
                if self._topology_stale:
                    cluster.nodes_manager.initialize()
                    self._topology_stale = False
                batches: dict[str, list[tuple[Any, ...]]] = {}
                nodes: dict[str, Any] = {}
                plan: list[list[_Part]] = []
                for command in commands:
                    parts: list[_Part] = []
                    pieces = [(0, command, [0])] if node is not None else _split_by_slot(command)
                    for slot, piece, positions in pieces:
                        target = node if node is not None else cluster.nodes_manager.get_node_from_slot(slot)
                        batch = batches.setdefault(target.name, [])
                        nodes[target.name] = target
                        parts.append((target.name, len(batch), positions))
                        batch.append(piece)
                    plan.append(parts)
                for name, batch in batches.items():
                    pool = cluster.get_redis_connection(nodes[name]).connection_pool
                    connection = pool.get_connection()
                    borrowed[name] = (pool, connection)
                    connection.send_packed_command(_pack(connection, batch))
                replies = {
                    name: [connection.read_response() for _ in batches[name]]
                    for name, (_, connection) in borrowed.items()
                }
            except BaseException as exc:
                for _, connection in borrowed.values():
                    connection.disconnect()  # replies may be left unread on any of them
                if isinstance(exc, RedisError):
                    # A dead node, a moved slot, a cluster failing over: read the map again.
                    self._topology_stale = True
                    self._failed(operation, exc)
                raise
            finally:
                for pool, connection in borrowed.values():
                    pool.release(connection)
        if node is not None:
            return [replies[node.name][index] for index in range(len(commands))]
        return [_merge(command, parts, replies) for command, parts in zip(commands, plan, strict=True)]

    def _scan(self, operation: str, pattern: str) -> Iterator[list[bytes]]:
        """Batches of keys matching `pattern`: SCAN on the server, or on every primary of a cluster.

        Raises BreakerOpen or RedisError like `_execute`.
        """
        if self._cluster is None:
            targets: list[Any] = [None]
        else:
            if self._topology_stale:
                self._execute_cluster(operation, [])  # re-reads the slot map, sends nothing
            targets = self._cluster.get_primaries()
        for target in targets:
            cursor: bytes | int = 0
            while True:
                command = ("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                if target is None:
                    cursor, batch = self._execute(operation, command)[0]
                else:
                    cursor, batch = self._execute_cluster(operation, [command], node=target)[0]
                yield batch
                if int(cursor) == 0:
                    break

    def _failed(self, operation: str, exc: RedisError) -> None:
        metrics.REDIS_ERRORS.labels(operation=operation).inc()
        logger.warning(
            "token cache %s failed, bypassing the cache: %s: %s",
            operation,
            type(exc).__name__,
            exc,
            extra={
                "event": "redis_error",
                "operation": operation,
                "error": type(exc).__name__,
                "breaker": self.breaker.name,
                "breaker_state": self.breaker.state.value,
                "consecutive_failures": self.breaker.failures + 1,
            },
        )

    # -- lookups --------------------------------------------------------------------

    def get_many(
        self,
        tokenizer: Tokenizer,
        texts: Sequence[str],
        *,
        ttl: int,
        sliding: bool = False,
        agent: str = "",
        digests: Sequence[str] | None = None,
    ) -> LookupBatch:
        """Token IDs of every text, in order, each with how it was obtained.

        Never raises for Redis trouble. `ttl` (seconds) applies to values written
        now, and with `sliding=True` is renewed on every hit. `digests`, if given,
        must be `text_digest(text)` of the same texts (for callers that stored it
        with the text); it spares hashing the texts on every call.
        """
        started = time.perf_counter()
        if ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        if digests is None:
            digests = [text_digest(text) for text in texts]
        elif len(digests) != len(texts):
            raise ValueError("digests must match texts one to one")
        fingerprint = tokenizer.fingerprint
        keys = [token_key(fingerprint, digest) for digest in digests]
        if not keys:
            return LookupBatch(ids=[], outcomes=[], round_trips=0, seconds=0.0)

        round_trips = 0
        commands: list[tuple[Any, ...]] = [("MGET", *keys)]
        if sliding:
            commands.extend(("EXPIRE", key, ttl) for key in keys)
        try:
            values: list[bytes | None] = self._execute("lookup", *commands)[0]
            round_trips = 1
        except (BreakerOpen, RedisError):
            bypassed = [Lookup(ids, Outcome.BYPASS) for ids in encode_many(tokenizer, texts)]
            return self._finish(bypassed, 0, started, agent)

        hit = codec.decode_all(values, keys)
        if hit is None:
            decoded = codec.decode_many(values, keys)
            if all(ids is not None for ids in decoded):
                # Every text cached, in values of several widths: a tokenizer of unknown
                # vocabulary (`server:`) stores each value as narrow as its own IDs allow.
                hit = cast(list[np.ndarray], decoded)
        if hit is not None:  # the hot path: every text cached; no per-item objects or counting
            seconds = time.perf_counter() - started
            _lookups(agent, Outcome.HIT).inc(len(hit))
            _TOKENS_FROM["cache"].inc(sum([ids.size for ids in hit]))
            _SECONDS_BY_RESULT["hit"].observe(seconds)
            return LookupBatch(ids=hit, outcomes=[Outcome.HIT] * len(hit), round_trips=round_trips, seconds=seconds)

        # From here on at least one text is missing or corrupt, so _fill has work to do.
        resolved: dict[bytes, Lookup] = {}
        corrupt = {keys[i] for i, ids in enumerate(decoded) if ids is None and values[i] is not None}
        missing: dict[bytes, str] = {}
        for i, ids in enumerate(decoded):
            if ids is None:
                missing.setdefault(keys[i], texts[i])
        round_trips += self._fill(tokenizer, missing, corrupt, ttl, resolved)

        items = []
        for i, ids in enumerate(decoded):
            items.append(Lookup(ids, Outcome.HIT) if ids is not None else resolved[keys[i]])
        return self._finish(items, round_trips, started, agent)

    def _fill(
        self,
        tokenizer: Tokenizer,
        missing: dict[bytes, str],
        corrupt: set[bytes],
        ttl: int,
        resolved: dict[bytes, Lookup],
    ) -> int:
        """Resolve missing keys into `resolved`, tokenizing each text once across processes.

        Returns the number of round trips used.
        """
        keys = list(missing)
        token = secrets.token_hex(8)
        lock_ms = int(self.lock_seconds * 1000)
        locks = {key: lock_for(key) for key in keys}
        claim: list[tuple[Any, ...]] = [("DEL", *corrupt)] if corrupt else []
        claim.extend(("SET", locks[key], token, "NX", "PX", lock_ms) for key in keys)
        # Read the values again behind the claims: a text another thread or process wrote
        # (and released) since our MGET is a hit now, not a second tokenization.
        claim.append(("MGET", *keys))

        def outcome(key: bytes) -> Outcome:
            return Outcome.CORRUPT if key in corrupt else Outcome.MISS

        try:
            *replies, now = self._execute("claim", *claim)[1 if corrupt else 0 :]
        except (BreakerOpen, RedisError):
            for key, encoded in zip(keys, encode_many(tokenizer, [missing[key] for key in keys]), strict=True):
                resolved[key] = Lookup(encoded, Outcome.BYPASS)
            return 0
        round_trips = 1
        for key, ids in zip(keys, codec.decode_many(now, keys), strict=True):
            if ids is not None:
                resolved[key] = Lookup(ids, Outcome.HIT)
        taken: list[bytes] = []  # our claims, released below even where the value came late
        claimed: list[bytes] = []  # ours to tokenize
        contended: list[bytes] = []  # another lookup's to tokenize: wait for it
        for key, reply in zip(keys, replies, strict=True):
            if reply is not None:
                taken.append(locks[key])
            if key not in resolved:
                (claimed if reply is not None else contended).append(key)

        try:
            tokenized = dict(zip(claimed, encode_many(tokenizer, [missing[key] for key in claimed]), strict=True))
        except BaseException:
            # Without this, every other process would wait out our claims (lock_seconds)
            # before tokenizing these texts itself.
            self._release(taken, token)
            raise
        round_trips += self._write(tokenizer, tokenized, ttl, release=_release_own(taken, token) if taken else None)
        for key, ids in tokenized.items():
            resolved[key] = Lookup(ids, outcome(key))

        if contended:
            waited, trips = self._wait_for(contended, locks)
            round_trips += trips
            for key, ids in waited.items():
                resolved[key] = Lookup(ids, Outcome.HIT)
            late = [key for key in contended if key not in waited]
            leftovers = dict(zip(late, encode_many(tokenizer, [missing[key] for key in late]), strict=True))
            if leftovers:
                round_trips += self._write(tokenizer, leftovers, ttl)
                for key, ids in leftovers.items():
                    resolved[key] = Lookup(ids, outcome(key))
        return round_trips

    def _wait_for(self, keys: list[bytes], locks: dict[bytes, bytes]) -> tuple[dict[bytes, np.ndarray], int]:
        """Poll for values another process is writing, until its claim ends or expires."""
        found: dict[bytes, np.ndarray] = {}
        pending = list(keys)
        deadline = self.clock.monotonic() + self.lock_seconds
        delay = 0.001
        round_trips = 0
        while pending and self.clock.monotonic() < deadline:
            self.clock.sleep(delay)
            delay = min(delay * 2, 0.05)
            try:
                replies = self._execute("wait", ("MGET", *pending, *[locks[key] for key in pending]))[0]
            except (BreakerOpen, RedisError):
                break
            round_trips += 1
            values, held = replies[: len(pending)], replies[len(pending) :]
            still = []
            for key, value, ids, lock in zip(pending, values, codec.decode_many(values, pending), held, strict=True):
                if ids is not None:
                    found[key] = ids
                elif value is None and lock is not None:
                    still.append(key)  # still being tokenized elsewhere
                # else: the claim ended without a good value (oversized, died): tokenize here
            pending = still
        return found, round_trips

    def _release(self, locks: list[bytes], token: str) -> None:
        if locks:
            with contextlib.suppress(BreakerOpen, RedisError):
                self._execute("release", _release_own(locks, token))

    def _write(
        self, tokenizer: Tokenizer, tokenized: dict[bytes, np.ndarray], ttl: int, release: tuple[Any, ...] | None = None
    ) -> int:
        """Write tokenized values back, and send `release` (our claims' release) in the same trip."""
        width = _id_width(tokenizer)
        commands: list[tuple[Any, ...]] = []
        for key, ids in tokenized.items():
            value = codec.encode(ids, key=key, width=width)
            if len(value) > self.max_value_bytes:
                metrics.SKIPPED_WRITES.labels(reason="oversized").inc()
                continue
            metrics.VALUE_BYTES.observe(len(value))
            commands.append(("SET", key, value, "EX", ttl))
        if release:
            commands.append(release)
        if not commands:
            return 0
        try:
            self._execute("write", *commands)
        except (BreakerOpen, RedisError):
            return 0
        return 1

    def _finish(self, items: list[Lookup], round_trips: int, started: float, agent: str) -> LookupBatch:
        seconds = time.perf_counter() - started
        counts: dict[Outcome, int] = {}
        cached = tokenized = 0
        for item in items:
            counts[item.outcome] = counts.get(item.outcome, 0) + 1
            if item.outcome is Outcome.HIT:
                cached += item.ids.size
            else:
                tokenized += item.ids.size
        for outcome, count in counts.items():
            _lookups(agent, outcome).inc(count)
        if cached:
            _TOKENS_FROM["cache"].inc(cached)
        if tokenized:
            _TOKENS_FROM["tokenizer"].inc(tokenized)
        if Outcome.BYPASS in counts:
            result = "bypass"
        elif len(counts) == 1 and Outcome.HIT in counts:
            result = "hit"
        else:
            result = "miss"
        _SECONDS_BY_RESULT[result].observe(seconds)
        return LookupBatch(
            ids=[item.ids for item in items],
            outcomes=[item.outcome for item in items],
            round_trips=round_trips,
            seconds=seconds,
        )

    # -- invalidation ---------------------------------------------------------------

    def invalidate_texts(self, tokenizer: Tokenizer, texts: Iterable[str]) -> int:
        """Delete the cached IDs of `texts` under `tokenizer`; returns how many existed."""
        fingerprint = tokenizer.fingerprint
        return self.invalidate_keys(token_key(fingerprint, text_digest(text)) for text in texts)

    def invalidate_keys(self, keys: Iterable[bytes | str]) -> int:
        """Delete a set of cache keys; returns how many existed. 0 if Redis is unavailable."""
        keys = list(keys)
        if not keys:
            return 0
        try:
            return int(self._execute("invalidate", ("UNLINK", *keys))[0])
        except (BreakerOpen, RedisError):
            return 0

    def invalidate_tokenizer(self, tokenizer: Tokenizer) -> int:
        """Delete every cached entry of `tokenizer` (SCAN in batches, never KEYS)."""
        return self._delete_matching(tokenizer_pattern(tokenizer.fingerprint))

    def _delete_matching(self, pattern: str) -> int:
        deleted = 0
        try:
            for batch in self._scan("invalidate", pattern):
                deleted += self.invalidate_keys(batch)
        except (BreakerOpen, RedisError):
            pass
        return deleted

    def usage(self, *, max_keys: int = 20_000) -> "Usage | None":
        """Entries, bytes and tokens held in Redis (reads headers only). None if unreachable."""
        entries = stored_bytes = tokens = 0
        try:
            for batch in self._scan("usage", ALL_TOKENS_PATTERN):
                if batch:
                    replies = self._execute(
                        "usage", *[("STRLEN", key) for key in batch], *[("GETRANGE", key, 0, 11) for key in batch]
                    )
                    for length, header in zip(replies[: len(batch)], replies[len(batch) :], strict=True):
                        entries += 1
                        stored_bytes += int(length)
                        tokens += codec.header_count(header)
                if entries >= max_keys:
                    return Usage(entries, stored_bytes, tokens, complete=False)
        except (BreakerOpen, RedisError):
            return None
        return Usage(entries, stored_bytes, tokens, complete=True)
