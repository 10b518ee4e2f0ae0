"""Retrieval: the agent's own chunks ranked by the database's full-text search.

One interface, `search_chunks`, over SQLite FTS5 with bm25 (the default) and PostgreSQL
full-text search, so every process sees the same index and nothing is rebuilt in memory.
The index follows the chunks by itself (see migration 0002).

User text is never FTS syntax: it is cut into words and each word is passed as a quoted
string (SQLite) or through `plainto_tsquery` (PostgreSQL), so `"`, `*`, `NEAR(`, `-`,
`AND`, `:` or `^` in a question are searched for, not obeyed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from django.db import connections

from agents.models import Agent, Chunk

# A question is short; a pasted log is not. Past this many distinct words the ranking
# gains nothing and the query only grows.
MAX_QUERY_TERMS = 64
# A match in the document's title counts this many times a match in the chunk's text.
TITLE_WEIGHT = 4.0

_WORD = re.compile(r"\w+")

_SQLITE_QUERY = """
    SELECT c.id, c.document_id, d.title, d.source, c.text, bm25(agents_chunk_fts, %s, 1.0) AS rank
    FROM agents_chunk_fts
    JOIN agents_chunk c ON c.id = agents_chunk_fts.rowid
    JOIN agents_knowledgedocument d ON d.id = c.document_id
    WHERE agents_chunk_fts MATCH %s AND d.agent_id = %s
    ORDER BY rank, c.id
    LIMIT %s
"""

# to_tsvector('english'::regconfig, c.text) must match the GIN index of migration 0002 exactly.
# {tsquery} becomes one plainto_tsquery(%s) per word, OR-ed: words travel as parameters.
_POSTGRES_QUERY = """
    WITH q AS (SELECT {tsquery} AS query)
    SELECT c.id, c.document_id, d.title, d.source, c.text,
           -(ts_rank(to_tsvector('english'::regconfig, c.text), q.query)
             + %s * ts_rank(to_tsvector('english'::regconfig, d.title), q.query)) AS rank
    FROM agents_chunk c
    JOIN agents_knowledgedocument d ON d.id = c.document_id, q
    WHERE d.agent_id = %s
      AND (to_tsvector('english'::regconfig, c.text) @@ q.query
           OR to_tsvector('english'::regconfig, d.title) @@ q.query)
    ORDER BY rank, c.id
    LIMIT %s
"""


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: int
    document_id: int
    title: str
    source: str
    text: str
    score: float  # higher is better; comparable only within one search


def query_terms(text: str) -> list[str]:
    """The distinct words of `text`, lower-cased, in order, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))[:MAX_QUERY_TERMS]


def _fts5_match(query: str, terms: list[str]) -> str:
    """An FTS5 query: every word, and every pair of adjacent words as a phrase, OR-ed.

    Each becomes an FTS5 string ("...", quotes doubled): data, never an operator. The
    phrases matter: bm25 gives a word found in over half the chunks no weight at all,
    so "how does the with statement work" needs the rare phrase "with statement".
    """
    words = [word.lower() for word in _WORD.findall(query)]
    pairs = list(dict.fromkeys(f"{a} {b}" for a, b in itertools.pairwise(words)))[:MAX_QUERY_TERMS]
    return " OR ".join('"' + item.replace('"', '""') + '"' for item in [*terms, *pairs])


def search_chunks(*, agent: Agent, query: str, limit: int) -> list[RetrievedChunk]:
    """The agent's chunks that best match `query`, best first; only that agent's documents."""
    terms = query_terms(query)
    if not terms or limit <= 0:
        return []
    connection = connections[Chunk.objects.db]
    params: list[str | int | float]
    if connection.vendor == "sqlite":
        match = _fts5_match(query, terms)
        sql, params = _SQLITE_QUERY, [TITLE_WEIGHT, match, agent.pk, limit]
    elif connection.vendor == "postgresql":
        tsquery = " || ".join(["plainto_tsquery('english'::regconfig, %s)"] * len(terms))
        sql = _POSTGRES_QUERY.format(tsquery=tsquery)
        params = [*terms, TITLE_WEIGHT, agent.pk, limit]
    else:
        raise NotImplementedError(f"Full-text retrieval supports SQLite and PostgreSQL, not {connection.vendor}.")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        RetrievedChunk(
            chunk_id=chunk_id, document_id=document_id, title=title, source=source, text=text, score=-float(rank)
        )
        for chunk_id, document_id, title, source, text, rank in rows
    ]
