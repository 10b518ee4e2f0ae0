"""Login throttling with django-axes: the backend that refuses locked-out logins, and the page they get.

Failures are counted per username and client address together (`AXES_LOCKOUT_PARAMETERS`),
so someone guessing passwords from one address locks out only that pair, never everyone who
shares the username from elsewhere; a success resets the count. The client address is
`REMOTE_ADDR`, which behind the nginx sample is the real client (uvicorn's
`--proxy-headers`), as for `/metrics`. API tokens are not logins: they never reach
`authenticate()`, so axes neither counts nor blocks them.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class LoginThrottleBackend(AxesStandaloneBackend):
    """axes' check before the password is, for logins that come with a request.

    A call without a request (a script, the test client's `login()`) has no client to throttle;
    axes would raise for it, so it is passed on to the next backend unchanged.
    """

    def authenticate(self, request: HttpRequest | None, *args: Any, **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """The login page again (429), saying that logins are paused and for how long."""
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    context = {
        "form": AuthenticationForm(request),
        "next": request.POST.get("next", request.GET.get("next", "")),
        "locked_out_minutes": minutes,
    }
    return render(request, "registration/login.html", context, status=429)
