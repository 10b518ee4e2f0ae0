"""Prompt assembly: `[system][history][context][user]` as token IDs within the budget."""

from __future__ import annotations

import numpy as np
import pytest

from agents.backends.base import ContextChunk
from agents.prompt import Layout, build_prompt, prompt_fingerprint, shared_prefix
from cachecore.tokenizers import Tokenizer, get_tokenizer

SYSTEM = "You answer from the context."
QUESTION = "What is the airspeed of an unladen swallow?"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return get_tokenizer("tiktoken:cl100k_base")


def _chunks(tokenizer: Tokenizer, count: int, words: int = 40) -> list[ContextChunk]:
    chunks = []
    for rank in range(count):
        text = f"Chunk {rank} says " + " ".join(f"fact{rank}x{i}" for i in range(words)) + "."
        chunks.append(
            ContextChunk(
                chunk_id=100 + rank,
                document_id=10 + rank,
                title=f"Doc {rank}",
                text=text,
                score=10.0 - rank,
                token_ids=tokenizer.encode(text),
            )
        )
    return chunks


HISTORY = [
    ("user", "oldest question about swallows"),
    ("assistant", "oldest answer about swallows"),
    ("user", "newer question about coconuts"),
    ("assistant", "newest answer about coconuts"),
]


def _build(tokenizer: Tokenizer, *, chunks: list[ContextChunk], history: list[tuple[str, str]], budget: int):
    return build_prompt(
        tokenizer=tokenizer, system_prompt=SYSTEM, chunks=chunks, history=history, question=QUESTION, budget=budget
    )


def test_the_layout_is_system_then_history_then_context_then_the_question(tokenizer: Tokenizer) -> None:
    chunks = _chunks(tokenizer, 2)
    prompt = _build(tokenizer, chunks=chunks, history=HISTORY, budget=10_000)
    text = prompt.text
    positions = [
        text.index(SYSTEM),
        text.index("User: oldest question"),
        text.index("Assistant: newest answer"),
        text.index("Context:"),
        text.index("[1] Doc 0"),
        text.index("[2] Doc 1"),
        text.index(f"User: {QUESTION}"),
    ]
    assert positions == sorted(positions)
    assert text.endswith("Assistant:")
    assert prompt.chunks == tuple(chunks)
    # The chat form in the same order: the context travels with the question it was retrieved for.
    assert [m["role"] for m in prompt.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompt.messages[0]["content"] == SYSTEM
    assert prompt.messages[-1]["content"].endswith(QUESTION)
    assert chunks[0].text in prompt.messages[-1]["content"]


def test_consecutive_turns_share_the_system_prompt_and_the_whole_history(tokenizer: Tokenizer) -> None:
    turn = _build(tokenizer, chunks=_chunks(tokenizer, 2), history=HISTORY, budget=10_000)
    later = build_prompt(
        tokenizer=tokenizer,
        system_prompt=SYSTEM,
        chunks=_chunks(tokenizer, 3, words=25),  # another question retrieves other chunks
        history=[*HISTORY, ("user", QUESTION), ("assistant", "It depends on the swallow.")],
        question="African or European?",
        budget=10_000,
    )
    stable = tokenizer.encode(SYSTEM + "\n\n" + "".join(f"{r.capitalize()}: {t}\n\n" for r, t in HISTORY))

    shared = shared_prefix(turn.token_ids.tolist(), later.token_ids.tolist())

    assert shared >= len(stable)
    assert [m["content"] for m in later.messages[: len(turn.messages) - 1]] == [
        m["content"] for m in turn.messages[:-1]
    ]


def test_the_former_layout_put_the_context_before_the_history(tokenizer: Tokenizer) -> None:
    prompt = build_prompt(
        tokenizer=tokenizer,
        system_prompt=SYSTEM,
        chunks=_chunks(tokenizer, 2),
        history=HISTORY,
        question=QUESTION,
        budget=10_000,
        layout=Layout.CONTEXT_FIRST,
    )
    assert prompt.text.index("Context:") < prompt.text.index("User: oldest question")
    assert tokenizer.decode(prompt.token_ids) == prompt.text
    assert prompt.messages[-1]["content"] == QUESTION


def test_the_ids_decode_to_the_text_and_embed_the_cached_chunk_ids_unchanged(tokenizer: Tokenizer) -> None:
    chunks = _chunks(tokenizer, 3)
    prompt = _build(tokenizer, chunks=chunks, history=HISTORY, budget=10_000)
    assert prompt.token_ids.dtype == np.uint32
    assert tokenizer.decode(prompt.token_ids) == prompt.text
    ids = prompt.token_ids.tolist()
    for chunk in chunks:
        cached = chunk.token_ids.tolist()
        assert any(ids[i : i + len(cached)] == cached for i in range(len(ids) - len(cached) + 1))
    assert prompt.fingerprint == prompt_fingerprint(prompt.token_ids)
    assert len(prompt.fingerprint) == 64


def test_the_same_inputs_give_the_same_prompt_and_fingerprint(tokenizer: Tokenizer) -> None:
    first = _build(tokenizer, chunks=_chunks(tokenizer, 2), history=HISTORY, budget=10_000)
    second = _build(tokenizer, chunks=_chunks(tokenizer, 2), history=HISTORY, budget=10_000)
    assert np.array_equal(first.token_ids, second.token_ids)
    assert first.fingerprint == second.fingerprint


def test_over_budget_the_lowest_ranked_chunks_go_first_and_history_stays(tokenizer: Tokenizer) -> None:
    chunks = _chunks(tokenizer, 4)
    everything = _build(tokenizer, chunks=chunks, history=HISTORY, budget=100_000)
    per_chunk = (
        everything.token_ids.size - _build(tokenizer, chunks=chunks[:3], history=HISTORY, budget=100_000).token_ids.size
    )

    prompt = _build(tokenizer, chunks=chunks, history=HISTORY, budget=int(everything.token_ids.size) - per_chunk - 1)

    assert [c.chunk_id for c in prompt.chunks] == [100, 101]
    assert "[3] Doc 2" not in prompt.text and "[4] Doc 3" not in prompt.text
    assert all(text in prompt.text for _, text in HISTORY)
    assert prompt.token_ids.size <= everything.token_ids.size - per_chunk - 1


def test_with_every_chunk_gone_the_oldest_history_goes_next(tokenizer: Tokenizer) -> None:
    no_context = _build(tokenizer, chunks=[], history=HISTORY[1:], budget=100_000)

    prompt = _build(tokenizer, chunks=_chunks(tokenizer, 3), history=HISTORY, budget=int(no_context.token_ids.size))

    assert prompt.chunks == ()
    assert "Context:" not in prompt.text
    assert "oldest question" not in prompt.text
    assert "oldest answer" in prompt.text and "newest answer" in prompt.text
    assert prompt.token_ids.size <= no_context.token_ids.size


def test_the_question_is_never_dropped_even_when_it_alone_exceeds_the_budget(tokenizer: Tokenizer) -> None:
    prompt = _build(tokenizer, chunks=_chunks(tokenizer, 2), history=HISTORY, budget=5)
    assert prompt.chunks == ()
    assert f"User: {QUESTION}" in prompt.text
    assert SYSTEM in prompt.text
    assert not any(text in prompt.text for _, text in HISTORY)
    assert prompt.messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
