"""A JSON answer to a turn on a model server, finished on the event loop after its view returned.

The JSON API and the OpenAI API without `stream` answer once the turn has ended, and the answer's
status depends on how it ended (200, or 503 when the model server failed), so nothing can be sent
before. Waiting for that in the view would hold an HTTP thread for the model's whole answer.
Where the server can await a response (tokencache_project/http_bridge.py says so in the request's
environ), the view returns an `AwaitedResponse` instead: the turn runs on the turn loop, and the
bridge awaits `resolve()` on its event loop, holding no thread. Anywhere else (Django's test
client, another WSGI server) and for a backend that computes rather than waits, the view runs the
turn in its thread as before. Either way the same service runs the turn and the same functions
render its answer or its error.

Django's middleware sees the response before it is resolved: the headers it adds stay, but the
status it records (django-prometheus) is the placeholder's 200, whatever the turn's outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

from agents.chat import TurnResult, generates_async, run_turn
from agents.interfaces.errors import ApiError, turn_failure
from agents.streaming import Done, Failed, TurnStream

# Set in the WSGI environ by a server that awaits `AwaitedResponse.resolve()` before sending.
AWAITS_RESPONSES = "tokencache.awaits_responses"

RenderResult = Callable[[TurnResult], HttpResponseBase]
RenderError = Callable[[ApiError], HttpResponseBase]


class AwaitedResponse(StreamingHttpResponse):
    """A placeholder the server resolves on its loop into the turn's JSON answer or error."""

    def __init__(self, stream: TurnStream, render_result: RenderResult, render_error: RenderError) -> None:
        super().__init__(streaming_content=())
        self._stream = stream
        self._render_result = render_result
        self._render_error = render_error

    async def resolve(self) -> None:
        """Wait (without a thread) for the turn's end; take the status, headers and body of its answer."""
        while True:
            event = await self._stream.anext_event()
            if isinstance(event, Done):
                final = self._render_result(event.result)
                break
            if isinstance(event, Failed):
                final = self._render_error(turn_failure(event.error))
                break
        self.status_code = final.status_code
        for name, value in final.items():
            self[name] = value
        self.streaming_content = [final.content]  # type: ignore[attr-defined]


def answer_turn(
    request: HttpRequest, turn: dict[str, Any], render_result: RenderResult, render_error: RenderError
) -> HttpResponseBase:
    """`render_result(run_turn(**turn))`, awaited on the server's loop where it can be.

    Errors of a turn run here propagate (the endpoint's decorator renders them); errors of an
    awaited turn are rendered with `render_error`, the same renderer.
    """
    if request.META.get(AWAITS_RESPONSES) and generates_async(turn["agent"]):
        return AwaitedResponse(TurnStream(**turn).start(), render_result, render_error)
    return render_result(run_turn(**turn))
