"""Prompt assembly as token IDs: `[system][history][context chunks][user]` within a budget.

The chunks' IDs come from the token cache; the small framing pieces (system prompt, context
header, chunk title lines, separators) repeat every turn and are encoded once per process
and tokenizer (a `server:` tokenizer would otherwise be asked for each of them on every
turn); only the history and the question are encoded anew. Every segment is encoded on its own, so the prompt's
text is exactly the concatenation of the segments' texts and the IDs of a chunk are the
cached ones, unchanged. The layout never varies (system first, then context, history,
question), so a model server's prefix cache hits on the system prompt at least.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agents.backends.base import ContextChunk, Prompt, TokenIds
from cachecore.tokenizers import Tokenizer

CONTEXT_HEADER = "Context:\n\n"
ROLE_LABELS = {"user": "User", "assistant": "Assistant", "system": "System"}


class Layout(enum.StrEnum):
    # [system][history][context][question]: consecutive turns share the system prompt and the history.
    PREFIX_STABLE = "prefix-stable"
    # [system][context][history][question], the former layout: turns share the system prompt only.
    CONTEXT_FIRST = "context-first"


@dataclass(frozen=True)
class _Segment:
    text: str
    ids: TokenIds

    @property
    def size(self) -> int:
        return int(self.ids.size)


def _encoded(tokenizer: Tokenizer, text: str) -> _Segment:
    return _Segment(text, np.asarray(tokenizer.encode(text), dtype=np.uint32))


# (tokenizer fingerprint, text) -> segment. The framing pieces of all agents are a few hundred
# at most; the bound only guards against an unexpected flood (it then simply starts over).
_framing_segments: dict[tuple[str, str], _Segment] = {}
FRAMING_ENTRIES = 4096


def _framing(tokenizer: Tokenizer, text: str) -> _Segment:
    """A framing piece's segment, shared by every turn (read-only IDs). Keyed by fingerprint, so a
    `server:` tokenizer replaced after a model change gets fresh entries."""
    key = (tokenizer.fingerprint, text)
    segment = _framing_segments.get(key)
    if segment is None:  # two threads may both encode it once: harmless
        segment = _encoded(tokenizer, text)
        segment.ids.flags.writeable = False
        if len(_framing_segments) >= FRAMING_ENTRIES:
            _framing_segments.clear()
        _framing_segments[key] = segment
    return segment


def _chunk_segments(tokenizer: Tokenizer, number: int, chunk: ContextChunk) -> list[_Segment]:
    return [
        _framing(tokenizer, f"[{number}] {chunk.title}\n"),
        _Segment(chunk.text, np.asarray(chunk.token_ids, dtype=np.uint32)),
        _framing(tokenizer, "\n\n"),
    ]


def prompt_fingerprint(token_ids: TokenIds) -> str:
    """sha256 of the IDs as little-endian uint32: equal fingerprints mean the same prompt, exactly."""
    return hashlib.sha256(np.asarray(token_ids, dtype="<u4").tobytes()).hexdigest()


def build_prompt(
    *,
    tokenizer: Tokenizer,
    system_prompt: str,
    chunks: Sequence[ContextChunk],
    history: Sequence[tuple[str, str]],
    question: str,
    budget: int,
    layout: Layout = Layout.PREFIX_STABLE,
) -> Prompt:
    """Assemble the prompt, dropping what the budget cannot hold.

    `chunks` come best first. Over budget, the lowest-ranked chunks go first, then the
    oldest history messages; the system prompt and the question always stay, so a
    question that alone exceeds the budget yields a prompt over it rather than no answer.
    """
    system = _framing(tokenizer, f"{system_prompt.strip()}\n\n") if system_prompt.strip() else None
    header = _framing(tokenizer, CONTEXT_HEADER)
    kept_chunks = list(chunks)
    chunk_segments = [_chunk_segments(tokenizer, number, chunk) for number, chunk in enumerate(kept_chunks, 1)]
    kept_history = list(history)
    history_segments = [
        _encoded(tokenizer, f"{ROLE_LABELS.get(role, role.capitalize())}: {text}\n\n") for role, text in kept_history
    ]
    user = _encoded(tokenizer, f"User: {question}\n\nAssistant:")

    def total() -> int:
        context = (header.size + sum(s.size for group in chunk_segments for s in group)) if chunk_segments else 0
        return (system.size if system else 0) + context + sum(s.size for s in history_segments) + user.size

    while total() > budget and chunk_segments:
        chunk_segments.pop()
        kept_chunks.pop()
    while total() > budget and history_segments:
        history_segments.pop(0)
        kept_history.pop(0)

    context = [*([header] if chunk_segments else []), *(s for group in chunk_segments for s in group)]
    head = [system] if system else []
    if layout is Layout.PREFIX_STABLE:
        segments = [*head, *history_segments, *context, user]
    else:
        segments = [*head, *context, *history_segments, user]
    token_ids = np.concatenate([s.ids for s in segments]).astype(np.uint32, copy=False)
    context_text = CONTEXT_HEADER + "".join(s.text for group in chunk_segments for s in group) if chunk_segments else ""
    history_messages = [{"role": role, "content": text} for role, text in kept_history]
    if layout is Layout.PREFIX_STABLE:
        # The same order in the chat form: this turn's context travels with its question.
        messages = [
            *([{"role": "system", "content": system_prompt.strip()}] if system_prompt.strip() else []),
            *history_messages,
            {"role": "user", "content": f"{context_text.strip()}\n\n{question}" if context_text else question},
        ]
    else:
        system_message = (system_prompt.strip() + "\n\n" if system_prompt.strip() else "") + context_text
        messages = [
            *([{"role": "system", "content": system_message.strip()}] if system_message.strip() else []),
            *history_messages,
            {"role": "user", "content": question},
        ]
    return Prompt(
        token_ids=token_ids,
        text="".join(s.text for s in segments),
        messages=messages,
        chunks=tuple(kept_chunks),
        question=question,
        fingerprint=prompt_fingerprint(token_ids),
    )


def shared_prefix(first: Sequence[int], second: Sequence[int]) -> int:
    """How many leading token IDs two prompts share: what a model server's prefix cache can reuse.

    Prompts are laid out for consecutive turns to share as much as they can; bench/prefix.py
    reports this over the demo's conversations.
    """
    shared = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        shared += 1
    return shared
