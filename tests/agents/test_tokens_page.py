"""The API tokens page: each person makes, sees and revokes only their own tokens."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client

from agents.models import ApiToken
from agents.tokens import authenticate_token, create_api_token


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_new_token_is_shown_once_and_works(alice: User) -> None:
    client = logged_in(alice)

    created = client.post("/tokens/", {"name": "  triage   script "})

    assert created.status_code == 201
    raw = created.context["created"]
    assert raw.encode() in created.content
    assert authenticate_token(raw) == alice
    assert ApiToken.objects.get(user=alice).name == "triage script"
    listing = client.get("/tokens/")
    assert raw.encode() not in listing.content
    assert raw[:8].encode() in listing.content


def test_a_token_needs_a_name(alice: User) -> None:
    assert logged_in(alice).post("/tokens/", {"name": "  "}).status_code == 400
    assert logged_in(alice).post("/tokens/", {"name": "x" * 101}).status_code == 400
    assert not ApiToken.objects.exists()


def test_people_see_and_revoke_only_their_own_tokens(alice: User, charlie: User) -> None:
    alices, alices_raw = create_api_token(user=alice, name="alice's script")
    charlies = create_api_token(user=charlie, name="charlie's script")[0]

    listing = logged_in(charlie).get("/tokens/").content.decode()
    assert "charlie&#x27;s script" in listing
    assert "alice&#x27;s script" not in listing

    assert logged_in(charlie).post(f"/tokens/{alices.pk}/revoke").status_code == 302
    assert authenticate_token(alices_raw) == alice
    logged_in(charlie).post(f"/tokens/{charlies.pk}/revoke")
    charlies.refresh_from_db()
    assert charlies.revoked_at is not None
