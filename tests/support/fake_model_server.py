"""A real HTTP server on loopback that speaks vLLM's OpenAI-compatible protocol.

Tests talk to it over TCP exactly as the app talks to vLLM: `/v1/completions` with a
token-ID or text prompt, `/v1/chat/completions`, `/v1/models`, streamed as server-sent
events or not, and vLLM's own `POST /tokenize` and `POST /detokenize` (what a
`server:<base URL>` tokenizer calls), backed by cachecore's offline cl100k_base. Every
route lives under `base_url`, which ends in a per-server path prefix.

It records every request body so a test can assert what the server received, and has
knobs for the ways real servers fail: an error status, a hang, a connection closed
mid-stream, a malformed stream, a refused connection (after `stop()`) and drift (echoing
prompt IDs other than those it was sent). The status, hang and API-key knobs apply to
every POST, /tokenize included, so a tokenizer outage is the same knob as a model outage.
`model` is read on every request: assigning another name makes the server serve another
model (its /v1/models, the `model` it accepts, and so a server tokenizer's fingerprint).

The generated text is deterministic and says what the server saw, e.g.
"Answer from fake model: received 123 prompt tokens.", so tests can check it end to end.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Generated "token IDs" start here, so they can never be mistaken for echoed prompt IDs.
FIRST_GENERATED_ID = 900_000


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    # The client's port: requests with the same one came over one kept-alive connection.
    client_port: int = 0


@dataclass
class Knobs:
    """How the server misbehaves; tests set these attributes directly."""

    # Answer every POST with this status and an OpenAI-shaped error carrying `error_message`.
    error_status: int | None = None
    error_message: str = "fake model server failure"
    # Wait this long (interruptible by stop()) before sending anything.
    hang_seconds: float = 0.0
    # Stream this many chunks, then wait `hang_seconds` mid-stream (if set) or close abruptly.
    stall_after_chunks: int | None = None
    close_after_chunks: int | None = None
    # Send a data line that is not JSON.
    malformed_stream: bool = False
    # Echo prompt_token_ids that differ from those received (tokenizer drift).
    drift: bool = False
    # Honour `return_token_ids` as vLLM does; False behaves like llama.cpp (no echo).
    echo_token_ids: bool = True
    # Require `Authorization: Bearer <api_key>`.
    api_key: str | None = None
    # Leave usage out of responses, as some servers do.
    send_usage: bool = True
    # Pause between streamed chunks, so tests can observe deltas arriving over time.
    chunk_delay_seconds: float = 0.0
    # /tokenize prepends this ID when `add_special_tokens` is true (vLLM's default), like a model
    # with a BOS token; None behaves like cl100k_base, which adds nothing.
    bos_token_id: int | None = None


@dataclass
class FakeModelServer:
    model: str = "fake-model"
    knobs: Knobs = field(default_factory=Knobs)
    # What /tokenize reports as `max_model_len`.
    max_model_len: int = 8192

    def __post_init__(self) -> None:
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0  # the most POSTs it was answering at once, since start
        self._stopping = threading.Event()
        self._wake = threading.Event()  # ends every hang: set by stop() and resume()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        # A per-server root path: breakers are per base URL, and the OS may hand a later test the
        # same port, so the URL must still name only this server.
        self._root = "/fake-" + secrets.token_hex(4)

    # --- lifecycle

    def start(self) -> FakeModelServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._stopping.clear()
        self._wake.clear()
        # Port 0 on the first start; a restart binds the same port again so a client's base URL stays valid.
        self._httpd = _QuietServer(("127.0.0.1", self._port), handler)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-model-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: later connections are refused. Releases any request that is hanging."""
        self._stopping.set()
        self._wake.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            # Keep-alive connections (a server tokenizer's httpx.Client holds one) would otherwise go
            # on being served by their handler threads after the listening socket is closed.
            self._httpd.close_open_connections()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def resume(self) -> None:
        """End every wait (hangs, chunk delays) now and from now until the next start(): answer at once."""
        self._wake.set()

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self._root}"

    # --- what it received

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The requests received on `path`, relative to `base_url` (e.g. "/tokenize")."""
        return [request for request in self.requests if request.path == path]

    def last_body(self) -> Any:
        with self._lock:
            return self._requests[-1].body

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _wait(self, seconds: float) -> None:
        self._wake.wait(seconds)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections the knobs break on purpose are not errors worth printing


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeModelServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK on every keep-alive request. Real servers (uvicorn) set TCP_NODELAY too.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    # --- routing

    def _route(self) -> str:
        # Paths outside this server's root answer 404, like a different server would.
        root = self.server_state._root
        return self.path.removeprefix(root) if self.path.startswith(root + "/") else "/not-found"

    def do_GET(self) -> None:
        state = self.server_state
        self.path = self._route()
        state._record(RecordedRequest("GET", self.path, dict(self.headers), None, self.client_address[1]))
        if self.path == "/v1/models":
            created = int(time.time())
            self._json(
                200,
                {
                    "object": "list",
                    "data": [{"id": state.model, "object": "model", "created": created, "owned_by": "vllm"}],
                },
            )
        else:
            self._error(404, "Not Found", "NotFoundError")

    def do_POST(self) -> None:
        state = self.server_state
        with state._lock:
            state._in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state._in_flight)
        try:
            self._post()
        finally:
            with state._lock:
                state._in_flight -= 1

    def _post(self) -> None:
        state = self.server_state
        knobs = state.knobs
        self.path = self._route()
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        state._record(RecordedRequest("POST", self.path, dict(self.headers), body, self.client_address[1]))

        if knobs.hang_seconds and knobs.stall_after_chunks is None:
            state._wait(knobs.hang_seconds)
            if state._stopping.is_set():
                return
        if knobs.api_key is not None and self.headers.get("Authorization") != f"Bearer {knobs.api_key}":
            return self._error(401, "Unauthorized", "AuthenticationError")
        if knobs.error_status is not None:
            return self._error(knobs.error_status, knobs.error_message, _error_type(knobs.error_status))
        if not isinstance(body, dict):
            return self._error(400, "The request body is not valid JSON.", "BadRequestError")
        if self.path in ("/tokenize", "/detokenize"):
            # vLLM serves these at the root, not under /v1, and `model` is optional there.
            if body.get("model") is not None and body["model"] != state.model:
                return self._error(404, f"The model `{body['model']}` does not exist.", "NotFoundError")
            return self._tokenize(body) if self.path == "/tokenize" else self._detokenize(body)
        if body.get("model") != state.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if self.path == "/v1/completions":
            return self._completions(body)
        if self.path == "/v1/chat/completions":
            return self._chat(body)
        return self._error(404, "Not Found", "NotFoundError")

    # --- endpoints

    def _completions(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
            prompt_ids: list[int] | None = list(prompt)
            prompt_tokens = len(prompt)
            seen = f"received {prompt_tokens} prompt tokens"
        elif isinstance(prompt, str) and prompt:
            prompt_ids = None
            prompt_tokens = len(prompt.split())
            seen = f"received a text prompt of {len(prompt)} characters"
        else:
            return self._error(400, "Prompt must be a non-empty string or a list of token IDs.", "BadRequestError")

        pieces = _pieces(f"Answer from fake model: {seen}.", body.get("max_tokens"))
        echo = None
        if body.get("return_token_ids") and self.server_state.knobs.echo_token_ids and prompt_ids is not None:
            echo = _drifted(prompt_ids) if self.server_state.knobs.drift else prompt_ids

        def choice(text: str, ids: list[int], finish: str | None, first: bool) -> dict[str, Any]:
            c: dict[str, Any] = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
            if echo is not None:
                c["prompt_token_ids"] = echo if first else None
                c["token_ids"] = ids
            return c

        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        head = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"]}
        finish = "length" if len(pieces) == body.get("max_tokens") else "stop"
        if body.get("stream"):
            chunks = [
                {
                    **head,
                    "choices": [
                        choice(text, [FIRST_GENERATED_ID + n], finish if n == len(pieces) - 1 else None, n == 0)
                    ],
                }
                for n, text in enumerate(pieces)
            ]
            if self._include_usage(body):
                chunks.append({**head, "choices": [], "usage": usage})
            return self._stream(chunks)
        ids = [FIRST_GENERATED_ID + n for n in range(len(pieces))]
        result = {**head, "choices": [choice("".join(pieces), ids, finish, True)]}
        if self.server_state.knobs.send_usage:
            result["usage"] = usage
        return self._json(200, result)

    def _chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            return self._error(400, "messages must be a non-empty list of {role, content} objects.", "BadRequestError")
        last = messages[-1]["content"]
        text = f"Answer from fake model: received {len(messages)} messages, the last asking: {last[:60]}"
        pieces = _pieces(text, body.get("max_tokens"))
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        head = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body["model"]}
        finish = "length" if len(pieces) == body.get("max_tokens") else "stop"
        if body.get("stream"):
            chunk_head = {**head, "object": "chat.completion.chunk"}
            chunks = [
                {
                    **chunk_head,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            ]
            chunks += [
                {
                    **chunk_head,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": piece},
                            "logprobs": None,
                            "finish_reason": finish if n == len(pieces) - 1 else None,
                        }
                    ],
                }
                for n, piece in enumerate(pieces)
            ]
            if self._include_usage(body):
                chunks.append({**chunk_head, "choices": [], "usage": usage})
            return self._stream(chunks)
        result = {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
        }
        if self.server_state.knobs.send_usage:
            result["usage"] = usage
        return self._json(200, result)

    def _tokenize(self, body: dict[str, Any]) -> None:
        # vLLM's TokenizeCompletionRequest: {"model"?, "prompt", "add_special_tokens" = true, ...}.
        prompt = body.get("prompt")
        add_special = body.get("add_special_tokens", True)
        if not isinstance(prompt, str) or not isinstance(add_special, bool):
            return self._error(400, "prompt must be a string and add_special_tokens a boolean.", "BadRequestError")
        tokens = _tokenizer().encode(prompt).tolist()
        bos = self.server_state.knobs.bos_token_id
        if add_special and bos is not None:
            tokens.insert(0, bos)
        self._json(
            200,
            {
                "count": len(tokens),
                "max_model_len": self.server_state.max_model_len,
                "tokens": tokens,
                "token_strs": None,
            },
        )

    def _detokenize(self, body: dict[str, Any]) -> None:
        # vLLM's DetokenizeRequest: {"model"?, "tokens": [int, ...]} -> {"prompt": str}.
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            return self._error(400, "tokens must be a list of integers.", "BadRequestError")
        try:
            text = _tokenizer().decode(tokens)
        except (KeyError, ValueError, OverflowError):
            return self._error(400, "tokens contains an ID outside the vocabulary.", "BadRequestError")
        self._json(200, {"prompt": text})

    def _include_usage(self, body: dict[str, Any]) -> bool:
        options = body.get("stream_options") or {}
        return bool(self.server_state.knobs.send_usage and options.get("include_usage"))

    # --- wire formats

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        # vLLM's current error shape.
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

    def _stream(self, chunks: list[dict[str, Any]]) -> None:
        knobs = self.server_state.knobs
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n, chunk in enumerate(_events(chunks, malformed=knobs.malformed_stream)):
            if n == knobs.close_after_chunks:
                # Abrupt close without the terminating chunk: what a crashing server looks like.
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if n == knobs.stall_after_chunks:
                self.server_state._wait(knobs.hang_seconds)
                if self.server_state._stopping.is_set():
                    return
            self._write_chunk(chunk)
            if knobs.chunk_delay_seconds:
                self.server_state._wait(knobs.chunk_delay_seconds)
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _events(chunks: list[dict[str, Any]], *, malformed: bool) -> Iterator[bytes]:
    for n, chunk in enumerate(chunks):
        if malformed and n == 1:
            yield b"data: {this is not json\n\n"
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _tokenizer() -> Any:
    # cachecore's offline copy: tiktoken.get_encoding("cl100k_base") would try to download it.
    from cachecore.tokenizers import get_tokenizer

    return get_tokenizer("tiktoken:cl100k_base")


def _pieces(text: str, max_tokens: Any) -> list[str]:
    # One "token" per word (with its trailing space), cut at max_tokens like a real model.
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    if isinstance(max_tokens, int) and max_tokens > 0:
        pieces = pieces[:max_tokens]
    return pieces


def _drifted(ids: list[int]) -> list[int]:
    return [*ids[:-1], ids[-1] + 1]


def _error_type(status: int) -> str:
    if status >= 500:
        return "InternalServerError"
    return {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 429: "RateLimitError"}.get(
        status, HTTPStatus(status).phrase.replace(" ", "")
    )
