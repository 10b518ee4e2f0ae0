"""OpenAI-compatible model servers: vLLM, llama.cpp server, Ollama, and the like.

A server that accepts token-ID prompts (vLLM) gets the prompt's token IDs as the `prompt`
of `/v1/completions`, so nothing is re-tokenized and the prefix cache sees the same IDs on
every turn; with `return_token_ids` vLLM echoes the IDs it used, which is the drift check.
Any other server gets the chat form on `/v1/chat/completions`. Both are streamed.

The stream is read with a pooled `aiohttp.ClientSession` (`clients.py`) on the running loop
(`agenerate`), so a turn that waits on the model holds no thread; `generate` runs the same
coroutine on the process's turn loop for synchronous callers: one implementation, kept-alive
connections for both.

Every failure becomes a `BackendError` with a message fit for the user: the server being
down, slow or failing (5xx, broken stream) is `BackendUnavailable` and counts towards the
server's circuit breaker; a request it rejects (4xx) does not, since retrying cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import queue
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import orjson
from django.conf import settings

from agents.backends.base import (
    BackendError,
    BackendUnavailable,
    Generation,
    OnDelta,
    Prompt,
)
from agents.backends.breaker import breaker_for, loop_guard
from agents.backends.clients import model_server_session
from agents.turn_loop import on_turn_loop, run_in_turn_loop, submit
from agents.validators import api_key_env_refusal, server_root_refusal
from cachecore.breaker import BreakerOpen

if TYPE_CHECKING:
    from cachecore.tokenizers import Tokenizer

logger = logging.getLogger(__name__)

# How long to wait for the end of a response after its `[DONE]`, to keep the connection.
DRAIN_SECONDS = 1.0


@dataclass
class _Stream:
    """What a response said, accumulated chunk by chunk."""

    parts: list[str] = field(default_factory=list)
    echoed_ids: list[int] | None = None
    generated_ids: int = 0
    usage: dict[str, Any] | None = None
    finished: bool = False


class OpenAIBackend:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        accepts_token_ids: bool = True,
        tokenizer: Tokenizer | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        total_timeout: float | None = None,
        cache_salt: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.accepts_token_ids = accepts_token_ids
        self.tokenizer = tokenizer
        self.connect_timeout = (
            connect_timeout if connect_timeout is not None else settings.TOKENCACHE_MODEL_CONNECT_TIMEOUT
        )
        self.read_timeout = read_timeout if read_timeout is not None else settings.TOKENCACHE_MODEL_READ_TIMEOUT
        # The read timeout bounds only the gap between pieces; this bounds the whole answer.
        self.total_timeout = total_timeout if total_timeout is not None else settings.TOKENCACHE_MODEL_TOTAL_TIMEOUT
        # vLLM's `cache_salt`: prompts with different salts never share prefix-cache (KV) blocks.
        self.cache_salt = cache_salt

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def generate(
        self, prompt: Prompt, *, max_tokens: int, temperature: float, on_delta: OnDelta | None = None
    ) -> Generation:
        """`agenerate`, for a synchronous caller: run on the turn loop, so it reuses its pooled connections.

        `on_delta` is called in the caller's thread, as each piece arrives; if it raises, the
        stream is abandoned and its error propagates.
        """
        if on_delta is None:
            return run_in_turn_loop(self.agenerate(prompt, max_tokens=max_tokens, temperature=temperature))
        if on_turn_loop():
            raise RuntimeError("OpenAIBackend.generate() would block the turn loop; await agenerate() instead")
        pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        answer = submit(self.agenerate(prompt, max_tokens=max_tokens, temperature=temperature, on_delta=pieces.put))
        answer.add_done_callback(lambda _: pieces.put(None))  # after the last piece: the stream has ended
        while (text := pieces.get()) is not None:
            try:
                on_delta(text)
            except BaseException:
                answer.cancel()
                raise
        return answer.result()

    async def agenerate(
        self, prompt: Prompt, *, max_tokens: int, temperature: float, on_delta: OnDelta | None = None
    ) -> Generation:
        """Answer on the running loop: the stream is awaited, no thread is held while the server writes."""
        # Checked here too, like the key's variable: a row written around the admin must not
        # send the key and the prompt to whatever path a query in its URL names.
        refusal = server_root_refusal(self.base_url)
        if refusal:
            raise BackendError(refusal)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        payload: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if self.accepts_token_ids:
            path = "/v1/completions"
            # Straight from the array: the IDs on the wire are exactly the IDs the cache served.
            payload["prompt"] = np.ascontiguousarray(prompt.token_ids)
            payload["return_token_ids"] = True
        else:
            path = "/v1/chat/completions"
            payload["messages"] = prompt.messages
        if self.cache_salt:
            payload["cache_salt"] = self.cache_salt
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

        try:
            # The whole stream is read inside the guard, so a broken stream counts as a failure.
            with loop_guard(breaker_for(self.base_url)):
                stream = await self._post(path, body, headers, on_delta)
        except BreakerOpen as exc:
            raise BackendUnavailable(
                f"The model server at {self.base_url} failed repeatedly; not calling it again for "
                f"{max(exc.retry_in, 1):.0f} s."
            ) from None
        return self._generation(prompt, stream)

    def _api_key(self) -> str | None:
        # Read at call time so that a rotated key needs no restart; never stored in the database.
        if not self.api_key_env:
            return None
        # Checked here too, not only when the agent is saved: a row written around the admin
        # must not be able to send another secret to a server of its choosing.
        refusal = api_key_env_refusal(self.api_key_env)
        if refusal:
            raise BackendError(refusal)
        key = os.environ.get(self.api_key_env)
        if not key:
            raise BackendError(
                f"The API key for the model server at {self.base_url} is expected in the environment "
                f"variable {self.api_key_env}, which is not set."
            )
        return key

    async def _post(self, path: str, body: bytes, headers: dict[str, str], on_delta: OnDelta | None) -> _Stream:
        url = self.base_url + path
        # `connect` covers waiting for a pooled connection too; `sock_read` bounds each wait for bytes.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout, sock_read=self.read_timeout
        )
        stream = _Stream()
        deadline = time.monotonic() + self.total_timeout
        draining = False
        try:
            response = await model_server_session(self.base_url).post(url, data=body, headers=headers, timeout=timeout)
            try:
                if response.status >= 400:
                    raise self._status_error(response.status, response.reason, await response.read())
                if response.headers.get("Content-Type", "").startswith("application/json"):
                    # Some servers ignore `stream`; one JSON answer is as good.
                    self._absorb(stream, self._decode(await response.read()), on_delta)
                    stream.finished = True
                else:
                    lines = _lines(response.content)
                    # Checked on every line, keep-alive comments included: trickling cannot outlast it.
                    async for line in lines:
                        if time.monotonic() > deadline:
                            raise BackendUnavailable(
                                f"The model server at {self.base_url} did not finish its answer "
                                f"within {self.total_timeout:g} s."
                            )
                        data = _sse_data(line)
                        if data is None:
                            continue
                        if data == "[DONE]":
                            stream.finished = True
                            break
                        self._absorb(stream, self._decode(data), on_delta)
                    if stream.finished:
                        # The answer is complete; reading the rest must not delay it.
                        _draining.add(task := asyncio.ensure_future(_drain(response, lines)))
                        task.add_done_callback(_draining.discard)
                        draining = True
            finally:
                if not draining:
                    response.release()  # read to the end: back to the pool; otherwise closed
        except aiohttp.ConnectionTimeoutError:
            raise BackendUnavailable(
                f"The model server at {self.base_url} did not accept a connection within {self.connect_timeout:g} s."
            ) from None
        except aiohttp.ClientConnectorError:
            raise BackendUnavailable(
                f"The model server at {self.base_url} is unreachable (connection refused or host not found)."
            ) from None
        except TimeoutError:  # aiohttp's read timeout (ServerTimeoutError) is one
            raise BackendUnavailable(
                f"The model server at {self.base_url} did not answer within {self.read_timeout:g} s."
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
            raise BackendUnavailable(
                f"The model server at {self.base_url} closed the connection before the answer was complete."
            ) from None
        except aiohttp.ClientError as exc:
            raise BackendUnavailable(
                f"The model server at {self.base_url} could not be reached ({type(exc).__name__})."
            ) from None
        if not stream.finished:
            raise BackendUnavailable(
                f"The model server at {self.base_url} ended the stream before the answer was complete."
            )
        return stream

    def _status_error(self, status: int, reason: str | None, content: bytes) -> BackendError:
        detail = _error_message(content) or reason or "no details"
        if status >= 500:
            return BackendUnavailable(f"The model server at {self.base_url} failed (HTTP {status}): {detail}")
        return BackendError(f"The model server at {self.base_url} rejected the request (HTTP {status}): {detail}")

    def _decode(self, data: str | bytes) -> dict[str, Any]:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            raise BackendError(
                f"The model server at {self.base_url} sent a response that is not OpenAI-compatible JSON."
            )
        if "error" in event:
            message = _error_message(data) or "an error without details"
            raise BackendUnavailable(f"The model server at {self.base_url} failed while answering: {message}")
        return event

    def _absorb(self, stream: _Stream, event: dict[str, Any], on_delta: OnDelta | None) -> None:
        if isinstance(event.get("usage"), dict):
            stream.usage = event["usage"]
        # Chat completions put the echo at the top level; completions put it in the choice.
        if isinstance(event.get("prompt_token_ids"), list):
            stream.echoed_ids = event["prompt_token_ids"]
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if isinstance(choice.get("prompt_token_ids"), list):
                stream.echoed_ids = choice["prompt_token_ids"]
            if isinstance(choice.get("token_ids"), list):
                stream.generated_ids += len(choice["token_ids"])
            text = _choice_text(choice)
            if text:
                stream.parts.append(text)
                if on_delta is not None:
                    on_delta(text)
            if choice.get("finish_reason"):
                stream.finished = True

    def _generation(self, prompt: Prompt, stream: _Stream) -> Generation:
        text = "".join(stream.parts)
        echoed: bool | None = None
        if self.accepts_token_ids and stream.echoed_ids is not None:
            echoed = _same_ids(stream.echoed_ids, prompt.token_ids)
            if not echoed:
                logger.warning(
                    "model server echoed different prompt token IDs (tokenizer drift)",
                    extra={"model_server": self.base_url, "model": self.model, "fingerprint": prompt.fingerprint},
                )
        usage = stream.usage or {}
        prompt_tokens = _int(usage.get("prompt_tokens"))
        if prompt_tokens is None:
            prompt_tokens = len(prompt.token_ids)
        completion_tokens = _int(usage.get("completion_tokens"))
        if completion_tokens is None:
            completion_tokens = stream.generated_ids or self._count(text)
        return Generation(
            text=text,
            cited_chunk_ids=tuple(chunk.chunk_id for chunk in prompt.chunks),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            backend=self.name,
            prompt_ids_echoed=echoed,
        )

    def _count(self, text: str) -> int:
        if not text:
            return 0
        if self.tokenizer is None:
            return len(text.split())
        return len(self.tokenizer.encode(text))


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The body's lines as they arrive, however long: one event may carry a whole prompt's token IDs.

    Split here rather than with `StreamReader.readline`, which refuses a line past its buffer
    size (64 KiB), about 10,000 echoed token IDs.
    """
    pending = b""
    async for chunk in content.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.removesuffix(b"\r").decode("utf-8", "replace")


async def _drain(response: aiohttp.ClientResponse, lines: AsyncIterator[str]) -> None:
    """Read what follows `[DONE]` (the body's last chunk), so the connection goes back to the pool.

    A response released unread is a connection closed. Bounded: a server that keeps the stream open
    after `[DONE]` costs a new connection next time, never the answer.
    """
    try:
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in lines:
                    pass
    finally:
        response.release()


# Drains in progress: the loop keeps only weak references to its tasks.
_draining: set[asyncio.Future[None]] = set()


def cache_salt_for(slug: str) -> str:
    """The agent's vLLM `cache_salt`: stable across turns and processes, different for every agent.

    Keyed with SECRET_KEY: a salt someone could compute would let a client of a shared model server
    probe, by timing, which prompts another agent has sent, what the salt is there to prevent.
    """
    message = f"tokencache cache_salt {slug}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


def _sse_data(line: str) -> str | None:
    """The payload of a `data:` field; None for comments, event names and blank separators."""
    return line[5:].strip() if line.startswith("data:") else None


def _choice_text(choice: dict[str, Any]) -> str:
    if isinstance(choice.get("text"), str):
        return choice["text"]
    for key in ("delta", "message"):
        part = choice.get(key)
        if isinstance(part, dict) and isinstance(part.get("content"), str):
            return part["content"]
    return ""


def _error_message(content: str | bytes) -> str | None:
    # vLLM and OpenAI: {"error": {"message": ...}}; older vLLM: {"object": "error", "message": ...};
    # llama.cpp and others sometimes {"error": "..."}.
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        return text.strip()[:300] or None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    if isinstance(error, str) and error:
        return error[:300]
    if data.get("message"):
        return str(data["message"])[:300]
    return None


def _same_ids(echoed: list[Any], sent: np.ndarray) -> bool:
    try:
        return np.array_equal(np.asarray(echoed, dtype=np.int64), sent.astype(np.int64))
    except (TypeError, ValueError, OverflowError):
        return False


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
