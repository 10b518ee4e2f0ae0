"""API tokens: shown once, stored hashed, revocable; the command that creates them."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.core.management import CommandError, call_command

from agents.models import ApiToken
from agents.tokens import authenticate_token, create_api_token, revoke_api_token


def test_it_stores_only_the_hash(alice):
    token, raw = create_api_token(user=alice, name="laptop")
    token.refresh_from_db()
    assert raw.startswith("tc_") and len(raw) > 40
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert token.prefix == raw[:8]
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw not in {str(v) for v in stored.values()}


def test_it_authenticates_the_owner_and_records_use(alice):
    token, raw = create_api_token(user=alice, name="laptop")
    assert authenticate_token(raw) == alice
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize("raw", ["", "tc_wrong", "x" * 5000])
def test_it_refuses_unknown_tokens(alice, raw):
    create_api_token(user=alice, name="laptop")
    assert authenticate_token(raw) is None


def test_revoked_token_stops_working_at_once(alice, client):
    token, raw = create_api_token(user=alice, name="laptop")
    assert client.get("/api/agents/", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    revoke_api_token(token=token)
    assert authenticate_token(raw) is None
    response = client.get("/api/agents/", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_token_of_deactivated_user_stops_working(alice):
    _, raw = create_api_token(user=alice, name="laptop")
    alice.is_active = False
    alice.save()
    assert authenticate_token(raw) is None


def test_command_prints_a_working_token_once(alice):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "alice", "--name", "ci", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert authenticate_token(raw) == alice
    assert ApiToken.objects.get(user=alice).name == "ci"
    assert "cannot be shown again" in err.getvalue()
    assert raw not in err.getvalue()


def test_command_refuses_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("create_api_token", "nobody", stdout=io.StringIO(), stderr=io.StringIO())
