"""Removing token IDs from the cache now, rather than when LRU or the TTL gets to them.

Correctness never needs this: keys are content-addressed, so an edited chunk has a new key
and its old IDs are unreachable. It frees memory at once, and lets an operator start an
agent or a tokenizer from cold. Keys are shared by every agent with the same tokenizer and
the same text, so forgetting one agent's entries may cost another agent a re-tokenization;
an edit forgets only the digests no chunk uses any more.
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.models import Agent, Chunk, KnowledgeDocument
from cachecore.keys import token_key
from cachecore.store import invalidate_keys, invalidate_tokenizer
from cachecore.tokenizers import get_tokenizer


def forget_agent(*, agent: Agent) -> int:
    """Delete the cached IDs of every chunk of `agent`; the number of keys deleted."""
    digests = Chunk.objects.filter(document__agent=agent).values_list("content_hash", flat=True)
    return forget_digests(tokenizer_spec=agent.tokenizer_spec, digests=digests)


def forget_document(*, document: KnowledgeDocument) -> int:
    digests = document.chunks.values_list("content_hash", flat=True)
    return forget_digests(tokenizer_spec=document.agent.tokenizer_spec, digests=digests)


def forget_tokenizer(*, tokenizer_spec: str) -> int:
    """Delete every entry of one tokenizer (a scan of the whole keyspace)."""
    return invalidate_tokenizer(get_tokenizer(tokenizer_spec))


def forget_unused(*, tokenizer_spec: str, digests: Iterable[str]) -> int:
    """Delete the entries of `digests` that no chunk under this tokenizer uses any more (after an edit)."""
    digests = set(digests)
    still_used = Chunk.objects.filter(
        content_hash__in=digests, document__agent__tokenizer_spec=tokenizer_spec
    ).values_list("content_hash", flat=True)
    return forget_digests(tokenizer_spec=tokenizer_spec, digests=digests - set(still_used))


def forget_digests(*, tokenizer_spec: str, digests: Iterable[str]) -> int:
    fingerprint = get_tokenizer(tokenizer_spec).fingerprint
    keys = {token_key(fingerprint, digest) for digest in digests}
    return invalidate_keys(keys) if keys else 0
