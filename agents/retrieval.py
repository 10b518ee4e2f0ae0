"""Retrieval: the agent's own chunks ranked by the database's full-text search.

One interface, `search_chunks`, over SQLite FTS5 with bm25 (the default) and PostgreSQL
full-text search, so every process sees the same index and nothing is rebuilt in memory.
The index follows the chunks by itself (see migration 0002).

Both rank the same way: the question's words and its pairs of adjacent words, each scored
by bm25 (rare ones weigh more, a match in the document's title counts TITLE_WEIGHT times,
long chunks are not favoured for being long). PostgreSQL's own `ts_rank` has no notion of
rarity, so the PostgreSQL query computes bm25 itself from its GIN indexes.

User text is never FTS syntax: it is cut into words and each word is passed as a quoted
string (SQLite) or as query parameters turned into lexemes by `to_tsvector` and
`phraseto_tsquery` (PostgreSQL), so `"`, `*`, `NEAR(`, `-`, `AND`, `:`, `!`, `<->` or `^`
in a question are searched for, not obeyed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from django.db import connections

from agents.models import Agent, Chunk

# A question is short; a pasted log is not. Past this many distinct words the ranking
# gains nothing and the query only grows.
MAX_QUERY_TERMS = 64
# A match in the document's title counts this many times a match in the chunk's text.
TITLE_WEIGHT = 4.0

_WORD = re.compile(r"\w+")

_SQLITE_QUERY = """
    SELECT c.id, c.document_id, d.title, d.source, c.text, c.content_hash, bm25(agents_chunk_fts, %s, 1.0) AS rank
    FROM agents_chunk_fts
    JOIN agents_chunk c ON c.id = agents_chunk_fts.rowid
    JOIN agents_knowledgedocument d ON d.id = c.document_id
    WHERE agents_chunk_fts MATCH %s AND d.agent_id = %s
    ORDER BY rank, c.id
    LIMIT %s
"""

# bm25 as FTS5 computes it (k1 = 1.2, b = 0.75; idf floored at 1e-6), over the agent's chunks:
# - words: each lexeme of the question under the 'english' configuration (stemmed; stop words such
#   as "with" have none), found through the GIN index on to_tsvector('english', text);
# - phrases: each pair of adjacent words under the 'simple' configuration (not stemmed, no stop
#   words, so "with statement" keeps its "with"), found through the GIN index on
#   to_tsvector('simple', text). Both expressions must match migration 0002 exactly, or the planner
#   ignores the indexes;
# - a match in the document's title adds TITLE_WEIGHT to the term's frequency, as the title
#   column's weight does in FTS5. A chunk's length is its text's and title's characters.
_POSTGRES_QUERY = """
    WITH
    items AS (
        SELECT row_number() OVER () AS item, kind, lexeme, query FROM (
            SELECT DISTINCT 'word' AS kind, v.lexeme, quote_literal(v.lexeme)::tsquery AS query
            FROM unnest(%(words)s::text[]) AS w(word), unnest(to_tsvector('english'::regconfig, w.word)) AS v
            UNION
            SELECT 'phrase', NULL, phraseto_tsquery('simple'::regconfig, p.pair)
            FROM unnest(%(pairs)s::text[]) AS p(pair)
        ) AS distinct_items
        WHERE numnode(query) > 0
    ),
    chunks AS (
        SELECT c.id, c.document_id, length(c.text) + length(d.title) AS size
        FROM agents_chunk c JOIN agents_knowledgedocument d ON d.id = c.document_id
        WHERE d.agent_id = %(agent)s
    ),
    stats AS (SELECT count(*)::float8 AS n, greatest(avg(size), 1)::float8 AS average_size FROM chunks),
    text_hits AS (
        SELECT i.item, c.id AS chunk_id,
               (SELECT sum(cardinality(v.positions)) FROM unnest(to_tsvector('english'::regconfig, c.text)) AS v
                WHERE v.lexeme = i.lexeme) AS tf
        FROM items i JOIN agents_chunk c ON to_tsvector('english'::regconfig, c.text) @@ i.query
        WHERE i.kind = 'word'
        UNION ALL
        SELECT i.item, c.id, 1
        FROM items i JOIN agents_chunk c ON to_tsvector('simple'::regconfig, c.text) @@ i.query
        WHERE i.kind = 'phrase'
    ),
    title_hits AS (
        SELECT i.item, d.id AS document_id
        FROM items i JOIN agents_knowledgedocument d
          ON d.agent_id = %(agent)s
         AND CASE i.kind WHEN 'word' THEN to_tsvector('english'::regconfig, d.title)
                         ELSE to_tsvector('simple'::regconfig, d.title) END @@ i.query
    ),
    hits AS (
        SELECT item, chunk_id, sum(tf)::float8 AS tf FROM (
            SELECT h.item, h.chunk_id, h.tf FROM text_hits h JOIN chunks ch ON ch.id = h.chunk_id
            UNION ALL
            SELECT t.item, ch.id, %(title_weight)s FROM title_hits t JOIN chunks ch ON ch.document_id = t.document_id
        ) AS text_and_title
        GROUP BY item, chunk_id
    ),
    weights AS (
        SELECT h.item, greatest(ln((s.n - count(*) + 0.5) / (count(*) + 0.5)), 1e-6) AS idf
        FROM hits h, stats s
        GROUP BY h.item, s.n
    ),
    scores AS (
        SELECT h.chunk_id,
               sum(w.idf * h.tf * 2.2 / (h.tf + 1.2 * (0.25 + 0.75 * ch.size / s.average_size))) AS score
        FROM hits h JOIN weights w ON w.item = h.item JOIN chunks ch ON ch.id = h.chunk_id, stats s
        GROUP BY h.chunk_id
    )
    SELECT c.id, c.document_id, d.title, d.source, c.text, c.content_hash, -sc.score AS rank
    FROM scores sc
    JOIN agents_chunk c ON c.id = sc.chunk_id
    JOIN agents_knowledgedocument d ON d.id = c.document_id
    ORDER BY rank, c.id
    LIMIT %(limit)s
"""


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: int
    document_id: int
    title: str
    source: str
    text: str
    content_hash: str  # text_digest(text), stored with the chunk: the token cache's key digest
    score: float  # higher is better; comparable only within one search


def query_terms(text: str) -> list[str]:
    """The distinct words of `text`, lower-cased, in order, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))[:MAX_QUERY_TERMS]


def adjacent_pairs(query: str) -> list[str]:
    """Every distinct pair of adjacent words of `query` ("a b"), lower-cased, at most MAX_QUERY_TERMS.

    The phrases matter: bm25 gives a word found in over half the chunks no weight at all,
    so "how does the with statement work" needs the rare phrase "with statement".
    """
    words = [word.lower() for word in _WORD.findall(query)]
    return list(dict.fromkeys(f"{a} {b}" for a, b in itertools.pairwise(words)))[:MAX_QUERY_TERMS]


def _fts5_match(query: str, terms: list[str]) -> str:
    """An FTS5 query: every word, and every pair of adjacent words as a phrase, OR-ed.

    Each becomes an FTS5 string ("...", quotes doubled): data, never an operator.
    """
    return " OR ".join('"' + item.replace('"', '""') + '"' for item in [*terms, *adjacent_pairs(query)])


def search_chunks(*, agent: Agent, query: str, limit: int) -> list[RetrievedChunk]:
    """The agent's chunks that best match `query`, best first; only that agent's documents."""
    terms = query_terms(query)
    if not terms or limit <= 0:
        return []
    connection = connections[Chunk.objects.db]
    params: list[Any] | dict[str, Any]
    if connection.vendor == "sqlite":
        match = _fts5_match(query, terms)
        sql, params = _SQLITE_QUERY, [TITLE_WEIGHT, match, agent.pk, limit]
    elif connection.vendor == "postgresql":
        sql = _POSTGRES_QUERY
        params = {
            "words": terms,
            "pairs": adjacent_pairs(query),
            "agent": agent.pk,
            "title_weight": TITLE_WEIGHT,
            "limit": limit,
        }
    else:
        raise NotImplementedError(f"Full-text retrieval supports SQLite and PostgreSQL, not {connection.vendor}.")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        RetrievedChunk(
            chunk_id=chunk_id,
            document_id=document_id,
            title=title,
            source=source,
            text=text,
            content_hash=content_hash,
            score=-float(rank),
        )
        for chunk_id, document_id, title, source, text, content_hash, rank in rows
    ]
