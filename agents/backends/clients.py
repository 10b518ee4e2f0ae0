"""One pooled `aiohttp.ClientSession` per model server and event loop, so turns reuse connections.

A new client per turn costs a TCP connection (and a TLS handshake) to the model server on every
turn and keeps none alive. A session belongs to the loop it was created on (its connections do),
so sessions are kept per loop; in practice that is the process's turn loop (`agents.turn_loop`).
Timeouts are per request; the pool only bounds how many connections one process opens.

aiohttp rather than httpx for the model server's stream, because reading the stream is most of a
streaming turn's work: 24 µs of CPU per streamed piece against 103-115 µs with httpx (0.7 ms
against 3.2-3.6 ms per 30-piece answer, uvloop, 50 streams at once; docs/performance.md), and its
pool does not poll every open connection whenever a request starts or ends, as httpcore's did.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import weakref

import aiohttp

# Open connections to one model server from one process; beyond that a turn waits for one (up to
# its connect timeout).
MAX_CONNECTIONS = 1024
KEEPALIVE_SECONDS = 30.0

# One TLS context for every session: building one loads the CA bundle.
_TLS = ssl.create_default_context()

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aiohttp.ClientSession]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def model_server_session(base_url: str) -> aiohttp.ClientSession:
    """The running loop's session for the model server at `base_url` (created on first use)."""
    loop = asyncio.get_running_loop()
    key = base_url.rstrip("/")
    with _lock:
        per_loop = _sessions.setdefault(loop, {})
        session = per_loop.get(key)
        if session is None or session.closed:
            session = per_loop[key] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS, ssl=_TLS
                ),
                # As httpx did: proxies from HTTP(S)_PROXY / NO_PROXY.
                trust_env=True,
            )
        return session
