"""This process's token store, on django-redis's `tokens` alias, and the functions that use it.

`get_many` and the `invalidate_*` functions are `TokenStore`'s methods on the process-wide
store, built on first use (and again in a forked child) with the process breaker, its
gauge and log listener, its database recorder and its recovery probe, whose threads (one
each per process) start with it; the recorder's row is deleted at exit.
"""

import atexit
import os
import threading
from collections.abc import Iterable, Sequence

from django.conf import settings

from cachecore import metrics
from cachecore.breaker import Breaker, gauge_and_log
from cachecore.probe import RecoveryProbe
from cachecore.process import ProcessIdentity
from cachecore.recorder import DatabaseRecorder
from cachecore.store.results import LookupBatch
from cachecore.store.token_store import TokenStore
from cachecore.tokenizers import Tokenizer

_default: TokenStore | None = None
_default_pid: int | None = None
_default_lock = threading.Lock()


def default_store() -> TokenStore:
    """This process's store: django-redis's `tokens` pool and the process breaker.

    Rebuilt after a fork (Celery's prefork workers), so a child never shares the
    parent's sockets, breaker or recorder thread.
    """
    global _default, _default_pid
    pid = os.getpid()
    if _default is not None and _default_pid == pid:
        return _default
    with _default_lock:
        if _default is None or _default_pid != pid:
            from django_redis import get_redis_connection

            identity = ProcessIdentity.current(getattr(settings, "TOKENCACHE_PROCESS_ROLE", "web"))
            recorder = DatabaseRecorder(identity)
            breaker = Breaker(
                name="tokens",
                fail_max=getattr(settings, "TOKENCACHE_BREAKER_FAIL_MAX", 5),
                reset_seconds=getattr(settings, "TOKENCACHE_BREAKER_RESET_SECONDS", 60.0),
                listeners=[gauge_and_log(identity), recorder],
            )
            metrics.BREAKER_STATE.labels(process=identity.label).set(breaker.state.gauge_value)
            recorder.register(breaker)
            client = get_redis_connection("tokens")
            probe = RecoveryProbe(
                breaker=breaker, client=client, interval=getattr(settings, "TOKENCACHE_BREAKER_PROBE_SECONDS", 2.0)
            )
            if getattr(settings, "TOKENCACHE_STORE_THREADS", True):  # tests beat and probe by hand
                recorder.start_heartbeat()
                probe.start()
            atexit.register(_forget_at_exit, recorder)
            atexit.register(_stop_at_exit, probe)
            _default = TokenStore(
                client,
                breaker=breaker,
                max_value_bytes=getattr(settings, "TOKENCACHE_MAX_VALUE_BYTES", 1024 * 1024),
                lock_seconds=settings.TOKENCACHE_LOCK_SECONDS,
            )
            _default_pid = pid
        return _default


def _stop_at_exit(probe: RecoveryProbe) -> None:
    probe.stop()  # no PING while the interpreter tears down


def _forget_at_exit(recorder: DatabaseRecorder) -> None:
    # A forked child inherits its parent's atexit hooks: only the process that
    # registered may forget its own row.
    if os.getpid() == recorder.identity.pid:
        recorder.stop()
        recorder.forget()


def get_many(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    ttl: int,
    sliding: bool = False,
    agent: str = "",
    digests: Sequence[str] | None = None,
) -> LookupBatch:
    """`TokenStore.get_many` on the process-wide store."""
    return default_store().get_many(tokenizer, texts, ttl=ttl, sliding=sliding, agent=agent, digests=digests)


def invalidate_texts(tokenizer: Tokenizer, texts: Iterable[str]) -> int:
    """`TokenStore.invalidate_texts` on the process-wide store."""
    return default_store().invalidate_texts(tokenizer, texts)


def invalidate_keys(keys: Iterable[bytes | str]) -> int:
    """`TokenStore.invalidate_keys` on the process-wide store."""
    return default_store().invalidate_keys(keys)


def invalidate_tokenizer(tokenizer: Tokenizer) -> int:
    """`TokenStore.invalidate_tokenizer` on the process-wide store."""
    return default_store().invalidate_tokenizer(tokenizer)
