"""How pages answer a refusal: the site's own 403 and 404 pages, or JSON for the page's script.

The chat page's script calls a few page endpoints with `fetch` (feedback, one message's HTML);
those requests carry `X-Requested-With: fetch` and get the API's JSON error shape, so the script
can show the message inline. Everything else gets a page a person can read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from agents.errors import ChatError
from agents.interfaces.errors import as_api_error, json_error

P = ParamSpec("P")
FETCH_HEADER = "X-Requested-With"


def wants_fragment(request: HttpRequest) -> bool:
    return request.headers.get(FETCH_HEADER) == "fetch"


def error_page(request: HttpRequest, error: ChatError) -> HttpResponse:
    if wants_fragment(request):
        response = json_error(as_api_error(error))
        return response
    template = "403.html" if error.status == 403 else "404.html" if error.status == 404 else "400.html"
    return render(request, template, {"reason": error.message}, status=error.status)


def page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A logged-in page whose service and selector refusals become the site's error pages."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ChatError as error:
            return error_page(request, error)

    return wrapper
