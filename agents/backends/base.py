"""The contract between the chat service and the model backends.

The chat service builds a `Prompt` once (token IDs for servers that take them, the same
prompt as text and as chat messages for servers that do not) and hands it to whatever
`backend_for(agent)` returns; it never needs to know which kind of backend answered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from agents.models import Agent

TokenIds = npt.NDArray[np.uint32]
OnDelta = Callable[[str], None]

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


# eq=False: numpy arrays make field-wise equality ambiguous; identity is what callers need.
@dataclass(frozen=True, eq=False)
class ContextChunk:
    chunk_id: int
    document_id: int
    title: str
    text: str
    score: float
    token_ids: TokenIds


@dataclass(frozen=True, eq=False)
class Prompt:
    """One prompt in three equivalent forms, so each kind of server gets what it accepts.

    `token_ids` is the truth (`[system][context][history][user]`, from the token cache);
    `text` is the same prompt as plain text; `messages` is the chat form
    `[system incl. context, history..., user]` for `/v1/chat/completions`.
    `chunks` are the context chunks that made it into the budget, best first.
    """

    token_ids: TokenIds
    text: str
    messages: list[dict[str, str]]
    chunks: tuple[ContextChunk, ...]
    question: str
    fingerprint: str


@dataclass(frozen=True)
class Generation:
    text: str
    cited_chunk_ids: tuple[int, ...]
    prompt_tokens: int
    completion_tokens: int
    backend: str
    # The drift check: the server echoed exactly the IDs we sent (None: it does not echo).
    prompt_ids_echoed: bool | None = None


class Backend(Protocol):
    def generate(
        self, prompt: Prompt, *, max_tokens: int, temperature: float, on_delta: OnDelta | None = None
    ) -> Generation:
        """Answer the prompt, calling `on_delta` with each piece of text as it arrives.

        Raises `BackendError` (or `BackendUnavailable`) with a message fit for the user.
        """
        ...


class BackendError(Exception):
    """A model backend could not answer; `message` is readable and safe to show and store."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendUnavailable(BackendError):
    """The model server is down, timed out, or its circuit breaker is open: try again later."""


def backend_for(agent: Agent) -> Backend:
    """The backend the agent is configured for; a misconfigured agent is a readable `BackendError`."""
    # Imported here: the implementations import this module for the contract.
    from cachecore.tokenizers import get_tokenizer

    kind = agent.backend_kind
    if kind == "extractive":
        from agents.backends.extractive import ExtractiveBackend

        return ExtractiveBackend(tokenizer=get_tokenizer(agent.tokenizer_spec))
    if kind == "openai":
        from agents.backends.openai import OpenAIBackend

        if not agent.backend_base_url:
            raise BackendError(f"Agent {agent.slug!r} uses an OpenAI-compatible server but has no base URL set.")
        if not agent.backend_model:
            raise BackendError(f"Agent {agent.slug!r} uses an OpenAI-compatible server but has no model name set.")
        return OpenAIBackend(
            base_url=agent.backend_base_url,
            model=agent.backend_model,
            api_key_env=agent.backend_api_key_env or None,
            accepts_token_ids=agent.backend_accepts_token_ids,
            tokenizer=get_tokenizer(agent.tokenizer_spec),
        )
    raise BackendError(f"Agent {agent.slug!r} has an unknown backend kind {kind!r} (use 'extractive' or 'openai').")
