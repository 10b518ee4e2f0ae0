"""Wrong passwords are throttled (django-axes) per username and address; API tokens are not logins."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from agents.tokens import create_api_token
from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
LOCKED = "logging in is paused for 15 minutes"


def _attempt(client: Client, path: str, username: str, password: str):
    return client.post(path, {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_five_wrong_passwords_lock_that_username_from_that_address(bob, path):
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    statuses = [_attempt(attacker, path, "bob", "wrong").status_code for _ in range(5)]
    assert statuses[:4] == [200] * 4  # told the password did not match, and may try again
    locked = _attempt(attacker, path, "bob", PASSWORD)  # even the right password, now
    assert locked.status_code == 429
    assert LOCKED in locked.content.decode()
    assert not _logged_in(attacker)
    # A login form comes with the message, to try again later.
    assert 'name="password"' in locked.content.decode()


def test_the_lock_holds_only_that_username_from_that_address(alice, bob):
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(6):
        _attempt(attacker, "/accounts/login/", "alice", "wrong")
    assert _attempt(attacker, "/accounts/login/", "alice", PASSWORD).status_code == 429

    elsewhere = Client(REMOTE_ADDR="198.51.100.7")  # alice herself, at her desk
    assert _attempt(elsewhere, "/accounts/login/", "alice", PASSWORD).status_code == 302
    assert _logged_in(elsewhere)
    same_address = Client(REMOTE_ADDR="203.0.113.9")  # a colleague behind the same address
    assert _attempt(same_address, "/accounts/login/", "bob", PASSWORD).status_code == 302


def test_a_success_resets_the_count(alice):
    client = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(4):
        assert _attempt(client, "/accounts/login/", "alice", "wrong").status_code == 200
    assert _attempt(client, "/accounts/login/", "alice", PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        assert _attempt(client, "/accounts/login/", "alice", "wrong").status_code == 200
    assert _attempt(client, "/accounts/login/", "alice", PASSWORD).status_code == 302


def test_the_lock_ends_after_the_cool_off(alice):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(5):
        _attempt(client, "/accounts/login/", "alice", "wrong")
    assert _attempt(client, "/accounts/login/", "alice", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _attempt(client, "/accounts/login/", "alice", PASSWORD).status_code == 302


def test_axes_reset_lifts_every_lock(alice):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(5):
        _attempt(client, "/accounts/login/", "alice", "wrong")
    assert _attempt(client, "/accounts/login/", "alice", PASSWORD).status_code == 429
    call_command("axes_reset", stdout=io.StringIO())
    assert _attempt(client, "/accounts/login/", "alice", PASSWORD).status_code == 302


def test_api_tokens_are_not_logins_and_are_never_locked_out(alice):
    token = create_api_token(user=alice, name="test")[1]
    attacker = Client(REMOTE_ADDR="127.0.0.1")  # the test client's own address
    for _ in range(6):
        _attempt(attacker, "/accounts/login/", "alice", "wrong")
    assert _attempt(attacker, "/accounts/login/", "alice", PASSWORD).status_code == 429
    failures = AccessAttempt.objects.get().failures_since_start
    api = Client(headers={"Authorization": f"Bearer {token}"})
    assert all(api.get("/api/agents/").status_code == 200 for _ in range(10))
    wrong = Client(headers={"Authorization": "Bearer not-a-token"})
    assert [wrong.get("/api/agents/").status_code for _ in range(10)] == [401] * 10
    assert AccessAttempt.objects.get().failures_since_start == failures  # bad tokens are not failed logins


def test_the_test_clients_login_and_force_login_still_work(alice):
    assert Client().login(username="alice", password=PASSWORD)  # no request: nothing to throttle
    client = Client()
    client.force_login(alice)
    assert _logged_in(client)


def test_the_limit_and_cool_off_come_from_the_environment():
    env = {**os.environ, "TOKENCACHE_LOGIN_FAILURE_LIMIT": "3", "TOKENCACHE_LOGIN_COOLOFF_MINUTES": "2"}
    code = "from django.conf import settings; print(settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "3 0:02:00"
