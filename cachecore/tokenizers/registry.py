"""`get_tokenizer(spec)`: each tokenizer loaded once per process, re-validated, failures remembered."""

import logging
import math
import threading
from dataclasses import dataclass

from cachecore.clock import SYSTEM, Clock
from cachecore.exceptions import TokenizerUnavailable
from cachecore.tokenizers.base import Tokenizer
from cachecore.tokenizers.huggingface import HuggingFaceTokenizer
from cachecore.tokenizers.offline_tiktoken import TiktokenTokenizer
from cachecore.tokenizers.server import ServerTokenizer

logger = logging.getLogger(__name__)

# A `server:` tokenizer is trusted for this long, then its fingerprint is probed again:
# when another model is deployed behind the same URL, this bounds how long its IDs can
# be served or written under the old model's keys.
SERVER_REFRESH_SECONDS = 60.0
# A load that failed after this long (a hung or blackholed server: its timeouts, waited out)
# is remembered for FAILED_LOAD_RETRY_SECONDS, so that turns fail at once instead of
# each waiting it out again. A load that failed faster (refused connection, bad spec)
# is cheaper to retry than to remember, and retrying it picks up a restarted server
# on the next turn.
SLOW_FAILURE_SECONDS = 1.0
FAILED_LOAD_RETRY_SECONDS = 10.0
# What the intervals above are measured on; tests replace it to move time.
clock: Clock = SYSTEM


@dataclass
class _Loaded:
    tokenizer: Tokenizer
    check_at: float  # clock.monotonic() after which to probe a server's fingerprint again


@dataclass(frozen=True)
class _Failed:
    message: str
    retry_at: float  # clock.monotonic() before which the load is not tried again


_loaded: dict[str, _Loaded] = {}
_failed: dict[str, _Failed] = {}
# One lock per spec: a slow load (a server that does not answer) holds up only the
# callers of that spec, not every first-time load in the process.
_loading: dict[str, threading.Lock] = {}


# Longer than any call on a replaced server tokenizer can take (its timeouts are 10 s).
CLOSE_REPLACED_AFTER_SECONDS = 60.0


def get_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer named by `spec`, loaded once per process and shared by threads.

    Raises `TokenizerUnavailable` with a message fit for a configuration error when
    the spec is unknown or its tokenizer cannot be loaded. A `server:` tokenizer is
    re-validated every `SERVER_REFRESH_SECONDS`: if the server now tokenizes
    differently (another model), a new instance with the new fingerprint replaces it.
    """
    loaded = _loaded.get(spec)
    if loaded is not None:
        if clock.monotonic() < loaded.check_at:
            return loaded.tokenizer
        return _revalidated(spec, loaded)
    # setdefault is atomic on a dict: every caller of one spec gets the same lock.
    with _loading.setdefault(spec, threading.Lock()):  # one thread loads; the others wait
        loaded = _loaded.get(spec)
        if loaded is not None:
            return loaded.tokenizer
        failed = _failed.get(spec)
        if failed is not None and clock.monotonic() < failed.retry_at:
            raise TokenizerUnavailable(failed.message)
        started = clock.monotonic()
        try:
            tokenizer = _load(spec)
        except TokenizerUnavailable as exc:
            finished = clock.monotonic()
            if finished - started >= SLOW_FAILURE_SECONDS:
                _failed[spec] = _Failed(
                    f"{exc} (not retried for {FAILED_LOAD_RETRY_SECONDS:g} s)", finished + FAILED_LOAD_RETRY_SECONDS
                )
            raise
        _failed.pop(spec, None)
        _loaded[spec] = _Loaded(tokenizer, _next_check(tokenizer))
        return tokenizer


def _next_check(tokenizer: Tokenizer) -> float:
    # Files and offline encodings cannot change under a running process; a server can.
    return clock.monotonic() + SERVER_REFRESH_SECONDS if isinstance(tokenizer, ServerTokenizer) else math.inf


def _revalidated(spec: str, loaded: _Loaded) -> Tokenizer:
    """`loaded`'s tokenizer if the server still tokenizes the same way, else its replacement.

    One thread probes; the others keep using the current instance meanwhile rather
    than wait. A probe that fails keeps the instance (its own calls will fail while
    the server is down) and is tried again after the next interval.
    """
    lock = _loading.setdefault(spec, threading.Lock())
    if not lock.acquire(blocking=False):
        return loaded.tokenizer
    try:
        current = _loaded[spec]
        if current is not loaded:  # replaced by another thread since we looked
            return current.tokenizer
        tokenizer = loaded.tokenizer
        assert isinstance(tokenizer, ServerTokenizer)  # the only kind with a finite check_at
        try:
            fingerprint = tokenizer.probe_fingerprint()
        except TokenizerUnavailable as exc:
            logger.warning(
                "could not re-validate tokenizer %s: %s", spec, exc, extra={"event": "tokenizer_probe_failed"}
            )
            loaded.check_at = _next_check(tokenizer)
            return tokenizer
        if fingerprint == tokenizer.fingerprint:
            loaded.check_at = _next_check(tokenizer)
            return tokenizer
        # Another model: its IDs must never be served or written under the old keys.
        del _loaded[spec]
        replacement = _load(spec)
        _loaded[spec] = _Loaded(replacement, _next_check(replacement))
        # Turns that fetched the old instance may still be using it: close it once they must be done.
        closer = threading.Timer(CLOSE_REPLACED_AFTER_SECONDS, tokenizer.close)
        closer.daemon = True
        closer.start()
        logger.warning(
            "tokenizer %s changed (fingerprint %s -> %s): using new cache keys",
            spec,
            tokenizer.fingerprint,
            replacement.fingerprint,
            extra={"event": "tokenizer_changed", "old": tokenizer.fingerprint, "new": replacement.fingerprint},
        )
        return replacement
    finally:
        lock.release()


def _load(spec: str) -> Tokenizer:
    kind, _, argument = spec.partition(":")
    if not argument:
        raise TokenizerUnavailable(
            f"tokenizer spec {spec!r} is malformed; expected tiktoken:<encoding>, "
            f"hf:<path to tokenizer.json> or server:<base URL>"
        )
    if kind == "tiktoken":
        return TiktokenTokenizer(argument)
    if kind == "hf":
        return HuggingFaceTokenizer(argument)
    if kind == "server":
        return ServerTokenizer(argument)
    raise TokenizerUnavailable(f"unknown tokenizer kind {kind!r} in {spec!r}; expected tiktoken:, hf: or server:")
