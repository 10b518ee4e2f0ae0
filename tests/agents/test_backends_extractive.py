"""The extractive backend: answers by quoting the retrieved chunks, cites them, uses no model."""

from __future__ import annotations

import re

from agents.backends import ContextChunk, Prompt, backend_for
from agents.backends.extractive import PREAMBLE, ExtractiveBackend
from agents.models import Agent
from agents.prompt import build_prompt
from cachecore.tokenizers import get_tokenizer

TOKENIZER = get_tokenizer("tiktoken:cl100k_base")

REDIS_DOWN = """# When Redis is down

Chat keeps answering when Redis is down. The token cache opens its circuit breaker after five
failures and then bypasses Redis at once, tokenizing chunks locally.

To recover, restart Redis with the configuration in deploy/redis.conf. The breaker lets a trial
call through after sixty seconds and closes when it succeeds.

```sh
redis-server deploy/redis.conf
```
"""
DASHBOARDS = """# Reading the dashboards

The hit rate is the share of chunk lookups served from Redis. A low hit rate after a deploy is
normal while the cache warms up. Restarting Redis empties the cache, so the hit rate drops.
"""
LOGGING_IN = """# Logging in

Use the username and password your administrator gave you. After three wrong passwords, wait a
minute before trying again.
"""


def chunk(chunk_id: int, title: str, text: str, score: float) -> ContextChunk:
    return ContextChunk(
        chunk_id=chunk_id,
        document_id=chunk_id * 10,
        title=title,
        text=text,
        score=score,
        token_ids=TOKENIZER.encode(text),
    )


def prompt_for(question: str, chunks: list[ContextChunk]) -> Prompt:
    return build_prompt(
        tokenizer=TOKENIZER,
        system_prompt="You are the support agent.",
        chunks=chunks,
        history=[],
        question=question,
        budget=4000,
    )


def support_chunks() -> list[ContextChunk]:
    return [
        chunk(1, "Redis down", REDIS_DOWN, 9.0),
        chunk(2, "Reading the dashboards", DASHBOARDS, 5.0),
        chunk(3, "Logging in", LOGGING_IN, 1.0),
    ]


def answer(
    question: str, chunks: list[ContextChunk] | None = None, max_tokens: int = 300
) -> tuple[str, tuple[int, ...]]:
    generation = ExtractiveBackend(tokenizer=TOKENIZER).generate(
        prompt_for(question, support_chunks() if chunks is None else chunks), max_tokens=max_tokens, temperature=0.7
    )
    return generation.text, generation.cited_chunk_ids


def quoted(text: str) -> list[str]:
    """The quoted sentences of an answer, without their markers."""
    body = text.split("\n\n")[1]
    return [re.sub(r" \[\d+\]$", "", line) for line in body.splitlines()]


def test_it_quotes_the_sentences_that_answer_the_question_best_first() -> None:
    text, _ = answer("What should I do to recover Redis?")

    sentences = quoted(text)
    assert sentences[0] == "To recover, restart Redis with the configuration in deploy/redis.conf."
    assert all(sentence in REDIS_DOWN.replace("\n", " ") + DASHBOARDS.replace("\n", " ") for sentence in sentences)


def test_markers_number_the_cited_chunks_and_every_used_chunk_is_cited() -> None:
    text, cited = answer("Why does the hit rate drop after I restart Redis?")

    markers = [int(n) for n in re.findall(r"\[(\d+)\]\n?", text.split("\n\nSources:")[0])]
    assert set(markers) == set(range(1, len(cited) + 1))
    assert cited[0] == 2  # the dashboards chunk answers this best
    assert set(cited) <= {1, 2}
    sources = text.split("Sources: ")[1]
    assert sources.startswith("[1] Reading the dashboards")
    assert 3 not in cited


def test_it_says_plainly_that_the_answer_is_extractive() -> None:
    text, _ = answer("How do I recover when Redis is down?")

    assert text.startswith(PREAMBLE)
    assert "no language model was used" in text


def test_the_same_question_always_gets_the_same_answer() -> None:
    first = answer("What happens to chat when Redis is down?")
    second = answer("What happens to chat when Redis is down?")

    assert first == second


def test_it_streams_sentence_by_sentence_and_the_pieces_join_to_the_answer() -> None:
    deltas: list[str] = []
    prompt = prompt_for("What should I do to recover Redis?", support_chunks())

    generation = ExtractiveBackend(tokenizer=TOKENIZER).generate(
        prompt, max_tokens=300, temperature=0.0, on_delta=deltas.append
    )

    assert "".join(deltas) == generation.text
    assert deltas[0] == PREAMBLE + "\n\n"
    assert deltas[1].startswith("To recover, restart Redis") and deltas[1].rstrip().endswith("[1]")
    assert deltas[-1].startswith("\n\nSources: ")
    assert len(deltas) == len(quoted(generation.text)) + 2


def test_with_nothing_retrieved_it_says_it_found_nothing_and_cites_nothing() -> None:
    text, cited = answer("How do I bake sourdough bread?", chunks=[])

    assert text.startswith("I found nothing in the knowledge base about \u201cHow do I bake sourdough bread?\u201d")
    assert "no language model was used" in text
    assert cited == ()


def test_retrieved_chunks_that_share_no_words_with_the_question_are_not_quoted() -> None:
    text, cited = answer("sourdough bread recipe")

    assert text.startswith("I found nothing in the knowledge base about")
    assert cited == ()


def test_the_higher_ranked_chunk_wins_when_sentences_match_equally() -> None:
    same = "Tokens are cached in Redis for every agent."
    chunks = [chunk(7, "First", same.replace("every", "each"), 3.0), chunk(8, "Second", same, 2.0)]

    _, cited = answer("Where are tokens cached?", chunks=chunks)

    assert cited[0] == 7


def test_headings_and_code_blocks_are_never_quoted() -> None:
    text, _ = answer("redis server deploy conf down")

    assert "# When Redis is down" not in text
    assert "redis-server deploy/redis.conf" not in text


def test_max_tokens_bounds_the_quoted_text() -> None:
    long_text, _ = answer("How do I recover when Redis is down?", max_tokens=300)
    short_text, short_cited = answer("How do I recover when Redis is down?", max_tokens=20)
    tiny_text, _ = answer("How do I recover when Redis is down?", max_tokens=5)

    assert len(quoted(short_text)) < len(quoted(long_text))
    assert sum(len(TOKENIZER.encode(s)) for s in quoted(short_text)) <= 20
    assert short_cited == (1,)
    # even a tiny budget answers with the best sentence, cut short
    assert len(quoted(tiny_text)) == 1 and quoted(tiny_text)[0].endswith("\u2026")


def test_usage_is_counted_with_the_agents_tokenizer() -> None:
    prompt = prompt_for("How do I recover when Redis is down?", support_chunks())

    generation = ExtractiveBackend(tokenizer=TOKENIZER).generate(prompt, max_tokens=300, temperature=0.0)

    assert generation.completion_tokens == len(TOKENIZER.encode(generation.text))
    assert generation.prompt_tokens == len(prompt.token_ids)
    assert generation.backend == "extractive"
    assert generation.prompt_ids_echoed is None


def test_backend_for_an_extractive_agent_answers_without_a_model() -> None:
    agent = Agent(slug="support", backend_kind="extractive", tokenizer_spec="tiktoken:cl100k_base")
    prompt = prompt_for("How do I recover when Redis is down?", support_chunks())

    generation = backend_for(agent).generate(prompt, max_tokens=300, temperature=0.2)

    assert generation.text.startswith(PREAMBLE)
    assert generation.cited_chunk_ids[0] == 1


def test_a_question_only_a_title_matches_quotes_that_chunk_from_its_start() -> None:
    text, cited = answer("how do I log in")

    assert quoted(text)[0] == "Use the username and password your administrator gave you."
    assert cited == (3,)


def test_sentences_that_merely_mention_a_common_word_are_left_out() -> None:
    text, _ = answer("How do I recover when Redis is down?")

    assert "The hit rate is the share of chunk lookups served from Redis." not in text


def test_rst_headings_fragments_and_lead_ins_are_never_quoted() -> None:
    reference = (
        'The "with" statement\n********************\n\n'
        'The "with" statement is used to wrap the execution of a block with methods of a context manager.\n\n'
        'The execution of the "with" statement proceeds as follows:\n\n'
        "   with A() as a:\n       pass\n\n"
        "is equivalent to the with statement above.\n"
    )

    text, _ = answer("how does the with statement work", chunks=[chunk(5, 'The "with" statement', reference, 4.0)])

    assert quoted(text) == [
        'The "with" statement is used to wrap the execution of a block with methods of a context manager.'
    ]
    assert "***" not in text
