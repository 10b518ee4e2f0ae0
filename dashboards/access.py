"""Who may see the dashboards: staff, and members of the `viewers` group. No one else."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

VIEWERS_GROUP = "viewers"


def can_view_dashboards(user: Any) -> bool:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return bool(user.is_staff or user.groups.filter(name=VIEWERS_GROUP).exists())


def dashboard_access(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous: the login page, then back here. Signed in without access: 403."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_view_dashboards(request.user):
            raise PermissionDenied("The dashboards are for staff and the viewers group.")
        return view(request, *args, **kwargs)

    return wrapped


def dashboards_nav(request: HttpRequest) -> dict[str, bool]:
    """Context processor: `can_view_dashboards` for the site header's "Dashboards" link."""
    return {"can_view_dashboards": can_view_dashboards(getattr(request, "user", None))}
