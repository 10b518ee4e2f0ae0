"""Production settings: secrets from the environment, `check --deploy` clean."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_under_production_settings() -> None:
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        ALLOWED_HOSTS="tokencache.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = _manage("check", DEBUG="0", ALLOWED_HOSTS="tokencache.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set in the environment when DEBUG is off" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("TOKENCACHE_POOL_SIZE", "ten", "TOKENCACHE_POOL_SIZE='ten' is not an integer"),
        ("TOKENCACHE_READ_TIMEOUT", "soon", "TOKENCACHE_READ_TIMEOUT='soon' is not a number"),
        ("TOKENCACHE_METRICS_ALLOW", "10.0.0.0/8,prometheus", "TOKENCACHE_METRICS_ALLOW: 'prometheus' does not appear"),
    ],
)
def test_a_malformed_setting_names_the_variable_and_the_value(variable: str, value: str, complaint: str) -> None:
    result = _manage("check", **{variable: value})
    assert result.returncode != 0
    assert complaint in result.stderr
