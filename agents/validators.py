"""Checks on what staff may type into an agent: the model server's root URL and its API key variable.

Used when an agent is saved (`agents.models.Agent.clean`) and again by the backend before
every request (`agents.backends.openai`), so a row that no longer passes is refused, not sent.
They return the reason for a refusal rather than raising, so each caller words it as its
own error (a form's ValidationError, a backend's BackendError).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Whoever may edit an agent chooses which environment variable is sent to the server it
# names; without a fixed prefix that would be any secret of the process (SECRET_KEY,
# DATABASE_URL). Only variables set aside for model keys may be named.
API_KEY_ENV_PREFIX = "TOKENCACHE_MODEL_KEY_"
_API_KEY_ENV_NAME = re.compile(re.escape(API_KEY_ENV_PREFIX) + r"[A-Z0-9_]+")


def api_key_env_refusal(name: str) -> str | None:
    """Why `name` may not hold a model server's API key, or None if it may."""
    if _API_KEY_ENV_NAME.fullmatch(name):
        return None
    return (
        f"The API key variable must be named {API_KEY_ENV_PREFIX}<NAME> (capital letters, digits, "
        f"underscores), e.g. {API_KEY_ENV_PREFIX}VLLM; {name!r} is not, so it is never read or sent."
    )


def server_root_refusal(url: str) -> str | None:
    """Why `url` may not be a model server's root, or None if it may.

    Paths such as `/v1/completions` are appended to the root: a query or fragment would
    swallow them and aim the request, API key and prompt included, at any path of the
    host. Credentials in a URL would end up in logs and error records.
    """
    try:
        parts = urlsplit(url)
    except ValueError as error:  # e.g. an unclosed IPv6 bracket
        return f"The server URL is not a URL: {error}."
    if "@" in parts.netloc:
        return (
            f"The server URL must not carry a user name or password; put the key in a "
            f"{API_KEY_ENV_PREFIX}<NAME> environment variable."
        )
    if "?" in url or "#" in url:
        return "The server URL must be a plain root such as http://127.0.0.1:8001, without a query or fragment."
    return None
