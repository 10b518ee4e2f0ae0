"""Pooled `httpx.AsyncClient`s per model server and event loop, so turns reuse connections.

A new client per turn costs a TCP connection (and a TLS handshake) to the model server on every
turn and keeps none alive. A client belongs to the loop it was created on (its connections do),
so clients are kept per loop; in practice that is the process's turn loop (`agents.turn_loop`).
Timeouts are per request; the pools only bound how many connections one process opens.

Several small pools (shards) per server, not one large one: httpcore's pool checks every one of
its connections (a poll(2) each) whenever a request starts or ends, so one pool of 500 open
streams spent the turn loop's whole time there (bench/concurrency.py, 500 streams). A request
takes the first shard with room, so a light load keeps reusing the first shard's connections.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass, field

import httpx

# Streams per shard before the next shard is used, shards per server: at most SHARD_STREAMS *
# SHARDS open streams to one model server from one process; beyond that a turn waits for a
# connection (up to the connect timeout).
SHARD_STREAMS = 32
SHARDS = 32
KEEPALIVE_PER_SHARD = 8
KEEPALIVE_SECONDS = 30.0


@dataclass
class _Shard:
    client: httpx.AsyncClient
    streams: int = 0


@dataclass
class ModelServerPool:
    """The shards of one model server on one loop; `lease()` one per request, `release` it after."""

    shards: list[_Shard] = field(default_factory=list)

    def lease(self) -> Lease:
        shard = next((s for s in self.shards if s.streams < SHARD_STREAMS), None)
        if shard is None:
            if len(self.shards) < SHARDS:
                shard = _Shard(_new_client())
                self.shards.append(shard)
            else:  # every shard is full: the least busy one queues the request
                shard = min(self.shards, key=lambda s: s.streams)
        shard.streams += 1
        return Lease(shard)


@dataclass
class Lease:
    _shard: _Shard
    released: bool = False

    @property
    def client(self) -> httpx.AsyncClient:
        return self._shard.client

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._shard.streams -= 1


# One TLS context for every client: building one (loading the CA bundle) took milliseconds of the
# turn loop for each new shard.
_TLS = httpx.create_ssl_context()


def _new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=_TLS,
        limits=httpx.Limits(
            max_connections=SHARD_STREAMS,
            max_keepalive_connections=KEEPALIVE_PER_SHARD,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
    )


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ModelServerPool]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def model_server_pool(base_url: str) -> ModelServerPool:
    """The running loop's pool for the model server at `base_url` (created on first use)."""
    loop = asyncio.get_running_loop()
    key = base_url.rstrip("/")
    with _lock:
        per_loop = _pools.setdefault(loop, {})
        pool = per_loop.get(key)
        if pool is None:
            pool = per_loop[key] = ModelServerPool()
        return pool
