"""Model backends: `backend_for(agent).generate(prompt, ...)` answers one chat turn."""

from agents.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    ContextChunk,
    Generation,
    Prompt,
    backend_for,
)

__all__ = ["Backend", "BackendError", "BackendUnavailable", "ContextChunk", "Generation", "Prompt", "backend_for"]
