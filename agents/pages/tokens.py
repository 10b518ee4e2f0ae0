"""The API tokens page: each person creates, sees and revokes their own tokens for scripts."""

from __future__ import annotations

from typing import cast

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from agents.errors import InvalidMessage
from agents.models import ApiToken
from agents.pages.responses import error_page, page
from agents.tokens import create_api_token, revoke_api_token

NAME_MAX_CHARS = ApiToken._meta.get_field("name").max_length or 100


@require_http_methods(["GET", "HEAD", "POST"])
@page
def api_tokens(request: HttpRequest) -> HttpResponse:
    """GET lists the person's tokens; POST creates one and shows its secret on this response only."""
    created: str | None = None
    if request.method == "POST":
        name = " ".join(request.POST.get("name", "").split())
        if not name or len(name) > NAME_MAX_CHARS:
            return error_page(request, InvalidMessage(f"A token needs a name of 1 to {NAME_MAX_CHARS} characters."))
        created = create_api_token(user=cast(User, request.user), name=name)[1]
    tokens = ApiToken.objects.filter(user=cast(User, request.user)).order_by("revoked_at", "-created")
    status = 201 if created else 200
    return render(
        request,
        "agents/tokens.html",
        {"tokens": tokens, "created": created, "api_base": request.build_absolute_uri("/"), "nav": "tokens"},
        status=status,
    )


@require_POST
@page
def revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=token_id, user=cast(User, request.user)).first()
    if token is not None:  # someone else's token or an unknown id: nothing to say either way
        revoke_api_token(token=token)
    return redirect("api_tokens")
