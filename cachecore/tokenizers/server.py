"""`server:<base URL>`: a vLLM server's own tokenizer, over POST /tokenize and /detokenize."""

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson

from cachecore.breaker import Breaker, BreakerOpen
from cachecore.exceptions import TokenizerUnavailable
from cachecore.tokenizers.base import fingerprint


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
    # Texts tokenized at once by `encode_many`: a turn's or a warm batch's misses then cost the
    # slowest request, not the sum, without one process flooding the model server.
    CONCURRENT_REQUESTS = 8

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
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
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
        return fingerprint(b"server:vllm", model.encode(), probe.astype("<u4").tobytes())

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

    def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
        """`encode` of each text, up to `CONCURRENT_REQUESTS` requests in flight; results in order."""
        if len(texts) <= 1:
            return [self.encode(text) for text in texts]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.CONCURRENT_REQUESTS, thread_name_prefix="tokenize")
        return list(self._pool.map(self.encode, texts))

    def close(self) -> None:
        """Release the connections and threads (a replaced tokenizer, once its last calls are done)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self._client.close()

    def decode(self, ids: "np.ndarray | Sequence[int]") -> str:
        body = self._post("/detokenize", {"tokens": np.asarray(ids, dtype=np.uint32)})
        try:
            return str(body["prompt"])
        except KeyError as exc:
            raise TokenizerUnavailable(f"tokenizer server {self._base_url!r} sent no text: {exc}") from exc
