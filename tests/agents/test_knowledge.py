"""Knowledge ingestion: chunks split on headings and paragraphs, to a token target, never mid-word."""

from __future__ import annotations

import pydoc_data.topics
import re

import pytest

from agents.knowledge import TARGET_CHUNK_TOKENS, chunk_text, delete_document, save_document, upsert_document
from agents.models import Chunk, KnowledgeDocument
from cachecore.keys import text_digest
from cachecore.tokenizers import Tokenizer, get_tokenizer
from tests.conftest import Demo


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return get_tokenizer("tiktoken:cl100k_base")


def _words(text: str) -> list[str]:
    return text.split()


def test_every_heading_starts_a_chunk_and_keeps_its_text(tokenizer: Tokenizer) -> None:
    text = "# Title\n\n## Part one\n\nFirst part.\n\nMore of it.\n\n## Part two\nSecond part."
    assert chunk_text(text, tokenizer=tokenizer) == [
        "# Title\n\n## Part one\n\nFirst part.\n\nMore of it.",
        "## Part two\nSecond part.",
    ]


def test_underlined_headings_of_the_python_reference_start_chunks_too(tokenizer: Tokenizer) -> None:
    text = "Intro text.\n\nSection\n=======\n\nBody of the section."
    assert chunk_text(text, tokenizer=tokenizer) == ["Intro text.", "Section\n=======\n\nBody of the section."]


def test_a_comment_in_fenced_code_is_not_a_heading_and_the_fence_stays_whole(tokenizer: Tokenizer) -> None:
    text = "## Setup\n\nRun this:\n\n```sh\n# start redis\n\nredis-server deploy/redis.conf\n```\n\nDone."
    assert chunk_text(text, tokenizer=tokenizer) == [text]


def test_small_paragraphs_are_packed_up_to_the_target(tokenizer: Tokenizer) -> None:
    paragraphs = [f"Paragraph {n} " + "word " * 30 for n in range(20)]
    chunks = chunk_text("\n\n".join(p.strip() for p in paragraphs), tokenizer=tokenizer, target_tokens=100)
    assert 5 <= len(chunks) <= 10
    assert all(len(tokenizer.encode(c)) <= 100 for c in chunks)
    assert [p for c in chunks for p in c.split("\n\n")] == [p.strip() for p in paragraphs]


def test_an_oversized_paragraph_splits_at_sentences_then_between_words_never_mid_word(tokenizer: Tokenizer) -> None:
    sentence = "Tokencache keeps token identifiers of knowledge chunks in Redis for every agent."
    run_on = " ".join(f"supercalifragilistic{n}" for n in range(200))
    text = " ".join([sentence] * 20) + "\n\n" + run_on
    chunks = chunk_text(text, tokenizer=tokenizer, target_tokens=60)

    assert len(chunks) > 5
    assert all(len(tokenizer.encode(c)) <= 60 for c in chunks)
    assert [w for c in chunks for w in _words(c)] == _words(text)
    assert sum(c.count(sentence) for c in chunks) == 20  # sentences fit, so none was cut


def test_the_whole_python_reference_chunks_within_the_target_and_loses_no_word(tokenizer: Tokenizer) -> None:
    for key, body in pydoc_data.topics.topics.items():
        chunks = chunk_text(body, tokenizer=tokenizer)
        assert [w for c in chunks for w in _words(c)] == _words(body), key
        # A single word longer than the target is the only excuse to exceed it.
        assert all(len(tokenizer.encode(c)) <= TARGET_CHUNK_TOKENS + 16 for c in chunks), key


def test_code_keeps_its_line_breaks_when_a_long_block_is_split(tokenizer: Tokenizer) -> None:
    code = "\n".join(f"    value_{n} = compute({n})" for n in range(200))
    chunks = chunk_text(code, tokenizer=tokenizer, target_tokens=80)
    assert len(chunks) > 1
    assert all(re.fullmatch(r"(value_\d+ = compute\(\d+\)\s*)+", c) for c in chunks)
    assert all("\n" in c for c in chunks)


def test_saving_a_document_stores_its_chunks_with_hash_and_token_count(demo: Demo, tokenizer: Tokenizer) -> None:
    document = save_document(
        document=KnowledgeDocument(
            agent=demo.agents["support"], source="test/a", title="A", body="# A\n\nAlpha.\n\n# B\n\nBeta."
        )
    )
    chunks = list(document.chunks.all())
    assert [(c.position, c.text) for c in chunks] == [(0, "# A\n\nAlpha."), (1, "# B\n\nBeta.")]
    assert all(c.content_hash == text_digest(c.text) for c in chunks)
    assert all(c.token_count == len(tokenizer.encode(c.text)) for c in chunks)


def test_upserting_unchanged_content_rewrites_nothing(demo: Demo) -> None:
    agent = demo.agents["support"]
    document, created = upsert_document(agent=agent, source="test/b", title="B", body="Bravo.")
    chunk_ids = list(document.chunks.values_list("id", flat=True))
    same, changed = upsert_document(agent=agent, source="test/b", title="B", body="Bravo.")
    assert created and not changed and same.pk == document.pk
    assert list(same.chunks.values_list("id", flat=True)) == chunk_ids


def test_deleting_a_document_deletes_its_chunks(demo: Demo) -> None:
    document, _ = upsert_document(agent=demo.agents["support"], source="test/c", title="C", body="Charlie.")
    delete_document(document=document)
    assert not Chunk.objects.filter(document_id=document.pk).exists()


def test_a_failing_rebuild_leaves_the_old_document_and_chunks(demo: Demo) -> None:
    agent = demo.agents["support"]
    document, _ = upsert_document(agent=agent, source="test/d", title="D", body="Delta.")
    agent.tokenizer_spec = "tiktoken:no_such_encoding"
    document.agent = agent
    document.body = "Echo."
    with pytest.raises(Exception, match="no_such_encoding"):
        save_document(document=document)
    document.refresh_from_db()
    assert document.body == "Delta."
    assert list(document.chunks.values_list("text", flat=True)) == ["Delta."]
