"""Who is calling an HTTP API, and the CSRF check for session-authenticated unsafe requests.

A Bearer token (`agents.tokens`) or the browser's session; a refusal is an `ApiError`
(401 with a `WWW-Authenticate` challenge, 403 for CSRF) in the caller's error shape.
"""

from __future__ import annotations

from typing import Literal, cast

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

from agents.interfaces.errors import ApiError
from agents.tokens import authenticate_token


class _CsrfCheck(CsrfViewMiddleware):
    # Return the reason instead of Django's HTML failure page, so the error keeps the API's shape.
    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason


def _no_response(request: HttpRequest) -> HttpResponse:
    raise AssertionError("never called: only process_request/process_view are used")


def authenticate(request: HttpRequest) -> tuple[User, Literal["session", "token"]]:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise ApiError(401, "unauthorized", "Use `Authorization: Bearer <token>`.", headers=_challenge())
        user = authenticate_token(raw.strip())
        if user is None:
            raise ApiError(401, "unauthorized", "The API token is invalid or revoked.", headers=_challenge())
        request.user = user
        return user, "token"
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        raise ApiError(401, "unauthorized", "Log in or send `Authorization: Bearer <token>`.", headers=_challenge())
    return cast(User, user), "session"


def _challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="tokencache"'}


def enforce_csrf(request: HttpRequest) -> None:
    check = _CsrfCheck(_no_response)
    check.process_request(request)
    reason = check.process_view(request, lambda r: HttpResponse(), (), {})
    if reason:
        raise ApiError(403, "csrf_failed", f"CSRF check failed: {reason}.")
