"""One pooled `httpx.AsyncClient` per model server and event loop, so turns reuse connections.

A new client per turn costs a TCP connection (and a TLS handshake) to the model server on every
turn and keeps none alive. A client belongs to the loop it was created on (its connections do),
so clients are kept per loop; in practice that is the process's turn loop (`agents.turn_loop`).
Timeouts are per request; the pool only bounds how many connections one process opens.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import httpx

# Open streams to one model server from one process; beyond this a turn waits for a connection
# (up to the connect timeout). Idle ones kept for reuse, for the next turns.
MAX_CONNECTIONS = 1024
MAX_KEEPALIVE = 128
KEEPALIVE_SECONDS = 30.0

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def async_client(base_url: str) -> httpx.AsyncClient:
    """The running loop's client for the model server at `base_url` (created on first use)."""
    loop = asyncio.get_running_loop()
    key = base_url.rstrip("/")
    with _lock:
        per_loop = _clients.setdefault(loop, {})
        client = per_loop.get(key)
        if client is None or client.is_closed:
            client = per_loop[key] = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS,
                    max_keepalive_connections=MAX_KEEPALIVE,
                    keepalive_expiry=KEEPALIVE_SECONDS,
                )
            )
        return client
