"""Method, authentication, size, CSRF and JSON parsing for HTTP API views, in one decorator.

    @api_endpoint("POST", body=ChatBody)
    def chat(call: ApiRequest[ChatBody], slug: str) -> HttpResponse: ...

The view gets an `ApiRequest` with an authenticated user and a validated, typed body,
or never runs: every refusal is an `ApiError` or a `ChatError`, rendered by the
endpoint's error renderer (the JSON API's shape, or OpenAI's for `/v1`). Order of checks:
method (405), credentials (401), body size (413), CSRF for session-authenticated unsafe
requests (403), JSON (400), the body's own validation (400/413). The body is read before
the CSRF check because Django's check parses form bodies for a token field: reading it
first keeps that parse in memory, and leaves the raw bytes readable for the JSON parser.
Django's own refusals of a malformed request (too many fields or files, a broken
multipart body) are the client's fault too, so they are 400s, never 500s.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import orjson
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponseBase
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from agents.errors import ChatError
from agents.interfaces.auth import authenticate, enforce_csrf
from agents.interfaces.bodies import ascii_int
from agents.interfaces.errors import ApiError, as_api_error, invalid_request, json_error

logger = logging.getLogger(__name__)

B = TypeVar("B")
ErrorRenderer = Callable[[ApiError], HttpResponseBase]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ApiRequest(Generic[B]):
    http: HttpRequest
    user: User
    via: Literal["session", "token"]
    body: B


def read_body(request: HttpRequest) -> bytes:
    """The raw body, or 413 past the limit (refused unread when Content-Length declares it)."""
    limit = settings.TOKENCACHE_MAX_BODY_BYTES
    declared = ascii_int(request.META.get("CONTENT_LENGTH") or "0")
    if declared is None:
        raise invalid_request("Content-Length must be a number.")
    if declared > limit:
        raise _too_large(limit)
    try:
        raw = request.body
    except RequestDataTooBig:
        raise _too_large(limit) from None
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def parse_json(raw: bytes) -> object:
    """The decoded body; 400 naming what is wrong (empty, not UTF-8, not JSON)."""
    if not raw.strip():
        raise invalid_request("The request body is empty; send a JSON object.")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "The request body is not valid UTF-8.") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {error}.") from None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"The request body is larger than {limit} bytes.")


def api_endpoint(
    *methods: str, body: Any = None, render: ErrorRenderer = json_error
) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Decorate an API view; `body` is a type with `parse(data) -> instance`, or None for no body.

    HEAD is accepted wherever GET is (HTTP requires it; the server drops the body), so `methods`
    lists only what the view and the schema describe.
    """
    allowed = frozenset(methods) | ({"HEAD"} if "GET" in methods else set())

    def decorate(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @csrf_exempt  # checked below, after we know how the caller authenticated
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in allowed:
                    raise ApiError(
                        405,
                        "method_not_allowed",
                        f"{request.method} is not allowed here; use {', '.join(sorted(allowed))}.",
                        headers={"Allow": ", ".join(sorted(allowed))},
                    )
                user, via = authenticate(request)
                raw = read_body(request) if body is not None else b""
                if via == "session" and request.method not in SAFE_METHODS:
                    enforce_csrf(request)
                parsed = body.parse(parse_json(raw)) if body is not None else None
                return view(ApiRequest(http=request, user=user, via=via, body=parsed), *args, **kwargs)
            except ApiError as error:
                return render(error)
            except (SuspiciousOperation, MultiPartParserError) as error:
                # Logged where Django logs its own refusals; the client gets a fixed text.
                logging.getLogger(f"django.security.{type(error).__name__}").warning(
                    "api_request_refused", extra={"path": request.path, "error": str(error)}
                )
                return render(
                    invalid_request("The request could not be read (too many fields or files, or a broken form body).")
                )
            except ChatError as error:
                return render(as_api_error(error))
            except Exception:
                # A bug, not the client's fault: logged with its traceback, answered in the API's shape.
                logger.exception("api_unhandled_error", extra={"path": request.path})
                return render(ApiError(500, "internal_error", "Something went wrong on our side."))

        wrapper.allowed_methods = frozenset(methods)  # type: ignore[attr-defined]  # read by the schema test
        return wrapper

    return decorate
