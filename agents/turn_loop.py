"""Where a turn's two kinds of work run: waiting on a loop, database work in bounded threads.

A turn that streams from a model server spends seconds waiting and milliseconds working. The
waiting (the model server's stream) runs as a coroutine on this process's turn loop, one event
loop in a daemon thread of its own, so an open stream holds no thread: one process carries
hundreds. The short synchronous parts (storing the question, retrieval, the token cache, storing
the answer) run in a bounded pool of threads (`in_turn_thread`), each call treated like a request
for connection handling.

The loop is the process's own, not the server's: a turn must run to the end whoever listens
(invariant 6, docs/architecture.md), whatever loop a view or consumer runs on, and a test client's short-lived
loop must not take a turn down with it. Created on first use, so a forked worker makes its own.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pool: ThreadPoolExecutor | None = None
_pid = 0
# Tasks on the loop: the loop keeps only weak references, and a turn nobody awaits must not vanish.
_running: set[asyncio.Future[Any]] = set()
# Everything submitted and not finished, as the submitters see it (for the exit hook below).
_submitted: set[Future[Any]] = set()
# At exit, how long running turns may take to finish (and store their answers): under the web
# unit's TimeoutStopSec (deploy/systemd/tokencache-web.service).
SHUTDOWN_GRACE_SECONDS = 25.0


def _started() -> tuple[asyncio.AbstractEventLoop, ThreadPoolExecutor]:
    global _loop, _pool, _pid
    with _lock:
        if _loop is None or _pool is None or _pid != os.getpid():
            loop = _new_loop()
            threading.Thread(target=loop.run_forever, name="turn-loop", daemon=True).start()
            pool = ThreadPoolExecutor(turn_threads(), thread_name_prefix="chat-turn")
            _loop, _pool, _pid = loop, pool, os.getpid()
        return _loop, _pool


def turn_threads() -> int:
    """Threads for the synchronous parts of turns (TOKENCACHE_TURN_THREADS).

    Bounded, so a flood of turns queues here instead of opening a database connection each; the
    parts are short, so a few threads serve many streams.
    """
    return int(settings.TOKENCACHE_TURN_THREADS)


def _new_loop() -> asyncio.AbstractEventLoop:
    # uvloop where installed (it comes with uvicorn[standard]): the turn loop reads every model
    # server's stream, and asyncio's own selector loop spent more of its time in register/unregister
    # than in the streams (py-spy at 500 streams).
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def turn_pool() -> ThreadPoolExecutor:
    """The bounded pool that runs turns' synchronous parts (and whole turns of synchronous backends)."""
    return _started()[1]


def on_turn_loop() -> bool:
    """True in the turn loop's own thread, where nothing may block."""
    loop = _loop
    if loop is None or _pid != os.getpid():
        return False
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def submit(coroutine: Coroutine[Any, Any, R]) -> Future[R]:
    """Run `coroutine` to the end on the turn loop; its result or error arrives in the returned future."""
    loop, _ = _started()

    async def keep() -> R:
        task = asyncio.ensure_future(coroutine)
        _running.add(task)
        try:
            return await task
        finally:
            _running.discard(task)

    future = asyncio.run_coroutine_threadsafe(keep(), loop)
    with _lock:
        _submitted.add(future)
    future.add_done_callback(_forget)
    return future


def _forget(future: Future[Any]) -> None:
    with _lock:
        _submitted.discard(future)


def run_in_turn_loop(coroutine: Coroutine[Any, Any, R]) -> R:
    """Block the calling (synchronous) thread until `coroutine` has run on the turn loop."""
    if on_turn_loop():
        coroutine.close()
        raise RuntimeError("run_in_turn_loop() would block the turn loop on itself; await the coroutine instead")
    return submit(coroutine).result()


def closing_connections(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` with old database connections closed before and after, as Django does around a request.

    A pool thread is long-lived: it must not keep a connection past CONN_MAX_AGE (0: after every
    call) or one the database dropped.
    """

    @functools.wraps(fn)
    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return closing


async def in_turn_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Await `fn(*args, **kwargs)` run in the turn pool (from any loop), connections handled as per request."""
    _, pool = _started()
    call = functools.partial(closing_connections(fn), *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


def _finish_running_turns() -> None:
    """At interpreter exit, let the turns on the loop finish, as the pool's threads finish theirs.

    The loop's thread is a daemon, which exit would stop mid-answer. Registered with threading's
    exit hooks, which run before the thread pools shut down (they run newest first, and
    concurrent.futures registered its hook when this module imported ThreadPoolExecutor), so a
    finishing turn can still store its answer in the pool.
    """
    if _pid != os.getpid():
        return
    with _lock:
        unfinished = list(_submitted)
    if unfinished:
        wait(unfinished, timeout=SHUTDOWN_GRACE_SECONDS)


# The same hook concurrent.futures uses for its pools (private, but stable since Python 3.9).
threading._register_atexit(_finish_running_turns)  # type: ignore[attr-defined]
