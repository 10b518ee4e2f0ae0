"""Retrieval: full-text search over the agent's own chunks, robust to any user text."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import F, Value
from django.db.models.functions import Concat

from agents.knowledge import delete_document, save_document, upsert_document
from agents.models import Agent, Chunk, KnowledgeDocument
from agents.retrieval import search_chunks
from cachecore.keys import text_digest
from tests.conftest import Demo

RECALL_K = 4
RECALL_FLOOR = 0.8


def _sources(agent: Agent, query: str, k: int = RECALL_K) -> list[str]:
    return [r.source for r in search_chunks(agent=agent, query=query, limit=k)]


@pytest.mark.parametrize("slug", ["support", "business", "documentation"])
def test_recall_at_4_over_the_labelled_queries_meets_the_floor(demo: Demo, slug: str) -> None:
    labelled = demo.queries[slug]
    found_at = {1: 0, RECALL_K: 0}
    misses = []
    for item in labelled:
        sources = _sources(demo.agents[slug], item["query"])
        found_at[RECALL_K] += item["source"] in sources
        found_at[1] += sources[:1] == [item["source"]]
        if item["source"] not in sources:
            misses.append(f"{item['query']!r} -> {sources}")
    recall = {k: hits / len(labelled) for k, hits in found_at.items()}
    figures = f"recall@1 {recall[1]:.2f}, recall@{RECALL_K} {recall[RECALL_K]:.2f}"
    print(f"\n{slug} on {connection.vendor}: {len(labelled)} queries, {figures}")  # SQLite FTS5 or PostgreSQL
    for miss in misses:
        print(f"  missed: {miss}")
    assert recall[RECALL_K] >= RECALL_FLOOR


def test_how_the_with_statement_works_finds_the_with_topic_first(demo: Demo) -> None:
    assert _sources(demo.agents["documentation"], "how does the with statement work")[0] == "pydoc/with"


def test_redis_down_finds_the_support_article_first(demo: Demo) -> None:
    assert _sources(demo.agents["support"], "what should I do when Redis is down")[0] == "support/redis-down"


@pytest.mark.parametrize(
    "question",
    [
        'what is "with',
        'a "quoted" phrase with an odd " quote',
        "redis*",
        "*",
        "NEAR(redis down)",
        "NEAR(",
        "redis -down",
        "-",
        "redis AND",
        "AND OR NOT",
        "title: redis",
        ":",
        "^redis",
        "^",
        "(((",
        "redis) OR (",
        "{text title}: down",
        "'; DROP TABLE agents_chunk; --",
        "%s %% %(name)s",
        "\\x00 \\ backslash",
        "émoji 🎉 ünïcode",
        "+ - * / ? !",
    ],
)
def test_fts_syntax_in_a_question_is_searched_as_text_never_obeyed(demo: Demo, question: str) -> None:
    results = search_chunks(agent=demo.agents["support"], query=question, limit=4)
    assert all(r.source.startswith("support/") for r in results)
    assert Chunk.objects.count() > 0  # the table is still there


def test_a_question_without_words_finds_nothing(demo: Demo) -> None:
    assert search_chunks(agent=demo.agents["support"], query='" * ( ) : ^ -', limit=4) == []


def test_fts_operator_words_count_as_ordinary_words(demo: Demo) -> None:
    agent = demo.agents["support"]
    upsert_document(
        agent=agent, source="test/near", title="Proximity", body="Stand NEAR the AND gate, NOT the OR gate."
    )
    assert _sources(agent, "NEAR AND NOT OR", k=1) == ["test/near"]


def test_an_agent_retrieves_only_its_own_documents(demo: Demo) -> None:
    upsert_document(
        agent=demo.agents["business"], source="business/zebra", title="Zebra", body="Zebra stripes invoice."
    )
    assert _sources(demo.agents["support"], "zebra stripes") == []
    assert _sources(demo.agents["business"], "zebra stripes") == ["business/zebra"]


def test_the_index_follows_edits_and_deletions(demo: Demo) -> None:
    agent = demo.agents["support"]
    document, _ = upsert_document(agent=agent, source="test/fruit", title="Fruit", body="Quinces ripen late.")
    assert _sources(agent, "quinces") == ["test/fruit"]

    upsert_document(agent=agent, source="test/fruit", title="Fruit", body="Medlars ripen later.")
    assert _sources(agent, "quinces") == []
    assert _sources(agent, "medlars") == ["test/fruit"]

    delete_document(document=document)
    assert _sources(agent, "medlars") == []


def test_the_index_follows_writes_that_bypass_the_services(demo: Demo) -> None:
    """The triggers keep the index right for the admin, a shell or a data migration alike."""
    agent = demo.agents["support"]
    document = save_document(document=KnowledgeDocument(agent=agent, source="test/raw", title="Raw", body="Kumquats."))
    Chunk.objects.filter(document=document).update(text=Concat(F("text"), Value(" Loquats.")))
    assert _sources(agent, "loquats") == ["test/raw"]

    KnowledgeDocument.objects.filter(pk=document.pk).update(title="Persimmon")
    assert _sources(agent, "persimmon") == ["test/raw"]

    Chunk.objects.filter(document=document).delete()
    assert _sources(agent, "kumquats") == []


def test_results_are_ranked_best_first(demo: Demo) -> None:
    results = search_chunks(agent=demo.agents["documentation"], query="yield generator", limit=8)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0].source == "pydoc/yield"


def test_each_result_carries_the_digest_of_its_own_text_for_the_token_cache(demo: Demo) -> None:
    # The chat turn passes these to get_many as the cache keys' digests instead of hashing the texts.
    results = search_chunks(agent=demo.agents["support"], query="redis down breaker", limit=8)
    assert results and all(r.content_hash == text_digest(r.text) for r in results)
