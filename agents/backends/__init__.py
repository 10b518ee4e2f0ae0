"""Model backends: `backend_for(agent).generate(prompt, ...)` answers one chat turn.

The contract is in `base.py`, the implementations in `extractive.py` and `openai.py`; this
module chooses between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from agents.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    ContextChunk,
    Generation,
    Prompt,
)
from agents.backends.extractive import ExtractiveBackend
from agents.backends.openai import OpenAIBackend, cache_salt_for
from cachecore.tokenizers import get_tokenizer

if TYPE_CHECKING:
    from agents.models import Agent

__all__ = ["Backend", "BackendError", "BackendUnavailable", "ContextChunk", "Generation", "Prompt", "backend_for"]


def backend_for(agent: Agent) -> Backend:
    """The backend the agent is configured for; a misconfigured agent is a readable `BackendError`."""
    kind = agent.backend_kind
    if kind == "extractive":
        return ExtractiveBackend(tokenizer=get_tokenizer(agent.tokenizer_spec))
    if kind == "openai":
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
            # Only servers that take token IDs (vLLM) get it; others may refuse an unknown field.
            cache_salt=cache_salt_for(agent.slug)
            if settings.TOKENCACHE_MODEL_CACHE_SALT and agent.backend_accepts_token_ids
            else None,
        )
    raise BackendError(f"Agent {agent.slug!r} has an unknown backend kind {kind!r} (use 'extractive' or 'openai').")
