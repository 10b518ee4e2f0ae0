"""The HTTP bridge: Django's WSGI handler in a pool of threads behind the ASGI server.

Driven the way an ASGI server drives it (scope, receive, send), with a WSGI callable in place of
Django's handler so that each specification controls the response. The production app through
uvicorn is exercised by every test that uses `asgi_server`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.http import HttpResponse, StreamingHttpResponse

from tokencache_project.http_bridge import ThreadedWsgiHttp


def scope(path: str = "/", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "root_path": "",
        "query_string": b"q=caf%C3%A9",
        "headers": [
            (b"host", b"example.test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"999"),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
        ],
        "client": ("127.0.0.9", 5555),
        "server": ("127.0.0.1", 8000),
        **extra,
    }


class Client:
    """One request's receive/send: the body in pieces, then (optionally) a disconnect."""

    def __init__(self, pieces: list[bytes], disconnect_after: asyncio.Event | None = None) -> None:
        self.incoming: list[dict[str, Any]] = [
            {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1} for n, piece in enumerate(pieces)
        ]
        self.disconnect_after = disconnect_after
        self.sent: list[dict[str, Any]] = []
        self.chunk_arrived = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        if self.disconnect_after is not None:
            await self.disconnect_after.wait()
        else:
            await asyncio.Event().wait()  # a client that stays until the response ends
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message.get("body"):
            self.chunk_arrived.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def handler_returning(build):
    """A WSGI callable that answers with `build(environ)`, a Django response, as Django's handler does."""
    seen: dict[str, Any] = {}

    def handler(environ, start_response):
        seen.update(environ, body=environ["wsgi.input"].read(), thread=threading.current_thread().name)
        response = build(environ)
        start_response(
            f"{response.status_code} {response.reason_phrase}",
            [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())],
        )
        return response

    return handler, seen


def test_a_request_reaches_the_handler_as_pep_3333_describes_it():
    handler, seen = handler_returning(lambda environ: HttpResponse(b"ok", status=201, headers={"X-Echo": "1"}))
    client = Client([b'{"message": ', b'"hi"}'])

    asyncio.run(ThreadedWsgiHttp(threads=2, handler=handler)(scope("/caf\u00e9/"), client.receive, client.send))

    assert seen["REQUEST_METHOD"] == "POST"
    assert seen["PATH_INFO"] == "/caf\u00e9/".encode().decode("latin-1")  # bytes as latin-1, as WSGI has it
    assert seen["QUERY_STRING"] == "q=caf%C3%A9"
    assert seen["wsgi.url_scheme"] == "https"
    assert (seen["REMOTE_ADDR"], seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("127.0.0.9", "127.0.0.1", "8000")
    assert seen["HTTP_HOST"] == "example.test"
    assert seen["HTTP_ACCEPT"] == "text/html,application/json"  # repeated headers joined
    assert seen["CONTENT_TYPE"] == "application/json"
    # The length is what arrived, whatever the header claimed.
    assert seen["body"] == b'{"message": "hi"}' and seen["CONTENT_LENGTH"] == "17"
    assert seen["thread"].startswith("http")
    start = client.sent[0]
    assert start["status"] == 201 and (b"X-Echo", b"1") in start["headers"]
    assert client.body == b"ok"


def test_an_asynchronous_stream_is_sent_as_it_is_produced_and_closed_after():
    produced = asyncio.Event()
    closed = threading.Event()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"first "
        await produced.wait()
        yield b"second"

    def build(environ):
        response = StreamingHttpResponse(pieces(), content_type="text/event-stream")
        response._resource_closers.append(closed.set)
        return response

    handler, _ = handler_returning(build)
    client = Client([b""])

    async def scenario() -> None:
        bridge = ThreadedWsgiHttp(threads=2, handler=handler)
        request = asyncio.ensure_future(bridge(scope(), client.receive, client.send))
        await asyncio.wait_for(client.chunk_arrived.wait(), 5)
        assert client.body == b"first "  # sent before the stream went on
        produced.set()
        await asyncio.wait_for(request, 5)

    asyncio.run(scenario())
    assert client.body == b"first second"
    assert client.sent[-1] == {"type": "http.response.body", "body": b""}
    assert closed.is_set()


def test_a_client_that_leaves_stops_the_forwarding_and_the_response_is_closed():
    left = asyncio.Event()
    closed = threading.Event()
    stopped = threading.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"."
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    def build(environ):
        response = StreamingHttpResponse(endless())
        response._resource_closers.append(closed.set)
        return response

    handler, _ = handler_returning(build)
    client = Client([b""], disconnect_after=left)

    async def scenario() -> None:
        bridge = ThreadedWsgiHttp(threads=2, handler=handler)
        request = asyncio.ensure_future(bridge(scope(), client.receive, client.send))
        await asyncio.wait_for(client.chunk_arrived.wait(), 5)
        left.set()
        await asyncio.wait_for(request, 5)

    asyncio.run(scenario())
    assert stopped.is_set() and closed.is_set()


def test_a_synchronous_stream_is_read_in_its_thread_a_chunk_at_a_time():
    threads: set[str] = set()

    def pieces() -> Iterator[bytes]:
        for piece in (b"a", b"b", b"c"):
            threads.add(threading.current_thread().name)
            yield piece

    handler, _ = handler_returning(lambda environ: StreamingHttpResponse(pieces()))
    client = Client([b""])

    asyncio.run(ThreadedWsgiHttp(threads=2, handler=handler)(scope(), client.receive, client.send))

    assert [m.get("body") for m in client.sent[1:]] == [b"a", b"b", b"c", b""]
    assert all(name.startswith("http") for name in threads)


def test_a_client_that_leaves_before_its_body_arrives_runs_nothing():
    handler, seen = handler_returning(lambda environ: HttpResponse(b"never"))
    client = Client([])
    client.incoming = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]

    asyncio.run(ThreadedWsgiHttp(threads=2, handler=handler)(scope(), client.receive, client.send))

    assert seen == {} and client.sent == []


@pytest.mark.django_db
def test_the_production_app_answers_through_django(asgi_server):
    import urllib.request

    with urllib.request.urlopen(f"http://{asgi_server.host}:{asgi_server.port}/healthz", timeout=5) as response:
        assert response.status == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"  # the middleware ran


@pytest.mark.django_db(transaction=True)
def test_a_streams_request_thread_lets_its_connection_go_when_the_view_returns():
    # The stream goes on from the event loop, and its close (request_finished) may run in another
    # pool thread: the view's thread handles its connection at once, as at a request's end. With
    # CONN_MAX_AGE 0 (the PostgreSQL run's) that closes it.
    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip("Django never closes an in-memory SQLite connection (it would drop the database)")
    views_connection = {}

    def build(environ):
        from django.db import connections

        views_connection["wrapper"] = wrapper = connections["default"]  # this thread's own, not the proxy
        wrapper.ensure_connection()

        async def body() -> AsyncIterator[bytes]:
            yield b"closed" if views_connection["wrapper"].connection is None else b"still open"

        return StreamingHttpResponse(body())

    handler, _ = handler_returning(build)
    client = Client([b""])

    asyncio.run(ThreadedWsgiHttp(threads=1, handler=handler)(scope(), client.receive, client.send))

    assert client.body == b"closed"
