"""Channels' auth middleware stack, its database work run in the sockets' thread pool.

Channels loads a socket's session and user with `database_sync_to_async`, which is
thread-sensitive: every socket of a process connecting at once queued on one shared thread. At
500 sockets opening over 3 s (bench/concurrency.py) that queue, not the work, set the time to the
first word. `agents.consumers.in_database_thread` runs the same function in the bounded pool the
consumers already use for their own database work.
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware, get_user
from channels.sessions import CookieMiddleware, SessionMiddleware

from agents.consumers import in_database_thread

# The undecorated function behind Channels' `get_user` (a SyncToAsync wrapper).
_load_user = in_database_thread(get_user.func)


class PooledAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        scope["user"]._wrapped = await _load_user(scope)


# Named like Channels' own AuthMiddlewareStack, which it replaces.
def PooledAuthMiddlewareStack(inner: Any) -> CookieMiddleware:
    return CookieMiddleware(SessionMiddleware(PooledAuthMiddleware(inner)))
