"""The contract between the chat service and the model backends.

The chat service builds a `Prompt` once (token IDs for servers that take them, the same
prompt as text and as chat messages for servers that do not) and hands it to whatever
`agents.backends.backend_for(agent)` returns; it never needs to know which kind of backend
answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

TokenIds = npt.NDArray[np.uint32]
OnDelta = Callable[[str], None]


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
