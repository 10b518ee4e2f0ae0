"""HTTP for the ASGI server: Django's WSGI handler in a fixed pool of threads, one hop per request.

Why not Django's ASGI handler: every view and almost every middleware here is synchronous, and
under ASGI Django runs each of them through its own `sync_to_async` hop, in a thread it creates
for the request and shuts down after it (asgiref's ThreadSensitiveContext). Measured with
bench/throughput.py on 2 cores, that machinery cost more than the views themselves: a bare view
took ~2 ms of server CPU per request. Here the whole request (middleware, view, the response's
content) runs in one call in one long-lived thread, as a WSGI server would run it, and the event
loop only moves bytes: the same server still serves websockets (Channels) and streams at one
address.

Streaming: a response whose content is an asynchronous iterator (the OpenAI-compatible API's
server-sent events) is streamed from the event loop once its view has returned, so an open
stream holds no thread; the view runs in the pool only until it has decided its status. A client
that leaves stops the forwarding only (the turn itself runs on, see agents/streaming.py). Any other
streaming response (files) is read in its thread, a chunk at a time. An `AwaitedResponse` (a
JSON answer to a turn on a model server, agents/interfaces/awaited.py) is resolved on the loop
before anything is sent: its status depends on how the turn ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse

from agents.interfaces.awaited import AWAITS_RESPONSES, AwaitedResponse

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Coroutine[Any, Any, None]]
Headers = list[tuple[bytes, bytes]]
# Django's WSGIHandler, or anything called like it that returns the response object as it does.
Handler = Callable[[dict[str, Any], Callable[..., Any]], HttpResponseBase]


class ThreadedWsgiHttp:
    """An ASGI application for `http` scopes that runs a Django WSGI handler in `threads` threads."""

    def __init__(self, threads: int, handler: Handler | None = None) -> None:
        self.handler: Handler = handler or cast(Handler, WSGIHandler())
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:  # the client left before it finished sending
            return
        with body:
            await self._serve(_environ(scope, body), receive, send)

    async def _serve(self, environ: dict[str, Any], receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        status, headers, rest = await loop.run_in_executor(self.pool, self._respond, environ)
        if isinstance(rest, bytes):
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": rest})
            return
        response = rest
        try:
            # A turn's answer, decided on this loop (agents/interfaces/awaited.py).
            if isinstance(response, AwaitedResponse):
                await response.resolve()
                status, headers = response.status_code, _headers(response)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if isinstance(response, StreamingHttpResponse) and response.is_async:
                await _forward_until_disconnect(response.streaming_content, send, receive)  # type: ignore[arg-type]
            else:
                await loop.run_in_executor(self.pool, _send_each, response, loop, send)
            await send({"type": "http.response.body", "body": b""})
        finally:
            # response.close() sends request_finished, which closes the thread's old connections.
            await loop.run_in_executor(self.pool, response.close)

    def _respond(self, environ: dict[str, Any]) -> tuple[int, Headers, bytes | HttpResponseBase]:
        """In a pool thread: the whole request, and the whole body unless it streams."""
        response = self.handler(environ, lambda status, headers: None)  # both are read from `response`
        status, headers = response.status_code, _headers(response)
        if isinstance(response, StreamingHttpResponse) and (response.is_async or isinstance(response, AwaitedResponse)):
            # The rest happens on the loop, and `response.close()` (request_finished) in whichever
            # thread is free then: this thread's request is over, so its connection is handled
            # now, as at the end of a request (kept, or closed past CONN_MAX_AGE).
            close_old_connections()
        if response.streaming:
            return status, headers, response
        try:
            return status, headers, cast(HttpResponse, response).content
        finally:
            response.close()


def _headers(response: HttpResponseBase) -> Headers:
    """The response's headers and cookies, as Django's WSGI handler passes them to start_response."""
    pairs = [*response.items(), *(("Set-Cookie", cookie.output(header="")) for cookie in response.cookies.values())]
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


async def _read_body(receive: Receive) -> tempfile.SpooledTemporaryFile[bytes] | None:
    """The request body, spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE as Django's ASGI handler does."""
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")  # noqa: SIM115
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            body.close()
            return None
        body.write(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body.seek(0)
    return body


def _environ(scope: Scope, body: tempfile.SpooledTemporaryFile[bytes]) -> dict[str, Any]:
    """PEP 3333's environ for an ASGI HTTP scope (strings are bytes decoded as latin-1)."""
    server_name, server_port = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    root_path = scope.get("root_path", "")
    path = scope["path"]
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server_name),
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(body.seek(0, 2)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        AWAITS_RESPONSES: True,
    }
    body.seek(0)
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT_LENGTH":  # the length read above is the one that counts
            continue
        key = f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _send_each(response: Iterable[bytes], loop: asyncio.AbstractEventLoop, send: Send) -> None:
    """In a pool thread: a synchronous streaming response's chunks, each sent as it comes."""
    for chunk in response:
        if chunk:
            message = {"type": "http.response.body", "body": chunk, "more_body": True}
            asyncio.run_coroutine_threadsafe(send(message), loop).result()


async def _forward_until_disconnect(content: AsyncIterator[bytes], send: Send, receive: Receive) -> None:
    """Send each chunk of `content` as it comes; stop when the client disconnects."""

    async def forward() -> None:
        async for chunk in content:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    forwarding = asyncio.ensure_future(forward())
    watching = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({forwarding, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        forwarding.cancel()  # nothing to cancel when it has finished
        with contextlib.suppress(asyncio.CancelledError):
            await forwarding  # raises what the content raised
