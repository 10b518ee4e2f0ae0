"""Responses to chat turns decided on the event loop after their view returned, holding no thread.

A turn's response cannot start before the turn has said how it goes: the JSON API and the OpenAI
API without `stream` answer once it has ended (200, or 503 when the model server failed), the
OpenAI API's SSE once its first event is in (an error before any text gets a real status).
Waiting for that in the view would hold an HTTP thread for the model's whole answer, or its time
to first token. Where the server can await a response (tokencache_project/http_bridge.py says so
in the request's environ), the view returns an `AwaitedResponse` instead: the turn runs apart
(agents/streaming.py), and the bridge awaits `resolve()` on its event loop. Anywhere else
(Django's test client, another WSGI server) the view waits in its thread as before, and a JSON
turn of a backend that computes rather than waits runs in the view's thread. Either way the same
service runs the turn and the same functions render its answer or its error.

Django's middleware sees the response before it is resolved: the headers it adds stay, but the
status it records (django-prometheus) is the placeholder's 200, whatever the turn's outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from agents.chat import TurnResult, generates_async, run_turn
from agents.interfaces.errors import ApiError, turn_failure
from agents.streaming import Done, Event, Failed, TurnStream

# Set in the WSGI environ by a server that awaits `AwaitedResponse.resolve()` before sending.
AWAITS_RESPONSES = "tokencache.awaits_responses"

RenderResult = Callable[[TurnResult], HttpResponseBase]
RenderError = Callable[[ApiError], HttpResponseBase]
RenderStream = Callable[[TurnStream, Event], HttpResponseBase]


class AwaitedResponse(StreamingHttpResponse):
    """A placeholder the server resolves on its loop into the response `decide()` returns."""

    def __init__(self, decide: Callable[[], Awaitable[HttpResponseBase]]) -> None:
        super().__init__(streaming_content=())
        self._decide = decide

    async def resolve(self) -> None:
        """Wait (without a thread) for the response; take its status, headers and content."""
        final = await self._decide()
        self.status_code = final.status_code
        for name, value in final.items():
            self[name] = value
        if isinstance(final, StreamingHttpResponse):
            self.streaming_content = final.streaming_content
        else:
            self.streaming_content = [cast(HttpResponse, final).content]


def answer_turn(
    request: HttpRequest, turn: dict[str, Any], render_result: RenderResult, render_error: RenderError
) -> HttpResponseBase:
    """`render_result(run_turn(**turn))`, awaited on the server's loop where it can be.

    Errors of a turn run here propagate (the endpoint's decorator renders them); errors of an
    awaited turn are rendered with `render_error`, the same renderer.
    """
    if not (request.META.get(AWAITS_RESPONSES) and generates_async(turn["agent"])):
        return render_result(run_turn(**turn))
    stream = TurnStream(**turn).start()

    async def answer() -> HttpResponseBase:
        while True:
            event = await stream.anext_event()
            if isinstance(event, Done):
                return render_result(event.result)
            if isinstance(event, Failed):
                return render_error(turn_failure(event.error))

    return AwaitedResponse(answer)


def stream_turn(
    request: HttpRequest, turn: dict[str, Any], render_stream: RenderStream, render_error: RenderError
) -> HttpResponseBase:
    """`render_stream(stream, first_event)` once the turn's first event is in, or its error.

    The status must wait for that event (a model server that is down is a 503, not a 200 with an
    error inside); the server awaits it on its loop where it can, a view's thread elsewhere.
    """
    stream = TurnStream(**turn).start()
    if not request.META.get(AWAITS_RESPONSES):
        first = stream.next_event()
        if isinstance(first, Failed):
            raise first.error
        return render_stream(stream, first)

    async def first_event() -> HttpResponseBase:
        first = await stream.anext_event()
        if isinstance(first, Failed):
            return render_error(turn_failure(first.error))
        return render_stream(stream, first)

    return AwaitedResponse(first_event)
