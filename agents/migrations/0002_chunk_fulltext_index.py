"""The full-text index of chunks, kept in step with them by the database itself.

On SQLite: an FTS5 table (porter stemming over unicode61) holding each chunk's text and
its document's title, maintained by triggers, so every write path (the knowledge
service, the admin, a shell, a raw SQL fix) keeps it right and every process sees the
same index. On PostgreSQL: GIN indexes on the two expressions the retrieval query
searches, the text's 'english' vector (stemmed words) and its 'simple' vector (every word
as written, for phrases such as "with statement", whose "with" is an English stop word);
a title is matched at query time. Other databases: nothing (retrieval refuses them with a
clear error).
"""

from django.db import migrations

SQLITE_FORWARD = [
    """
    CREATE VIRTUAL TABLE agents_chunk_fts USING fts5(
        title, text, tokenize = 'porter unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER agents_chunk_fts_insert AFTER INSERT ON agents_chunk BEGIN
        INSERT INTO agents_chunk_fts(rowid, title, text)
        VALUES (new.id, (SELECT title FROM agents_knowledgedocument WHERE id = new.document_id), new.text);
    END
    """,
    """
    CREATE TRIGGER agents_chunk_fts_delete AFTER DELETE ON agents_chunk BEGIN
        DELETE FROM agents_chunk_fts WHERE rowid = old.id;
    END
    """,
    """
    CREATE TRIGGER agents_chunk_fts_update AFTER UPDATE ON agents_chunk BEGIN
        DELETE FROM agents_chunk_fts WHERE rowid = old.id;
        INSERT INTO agents_chunk_fts(rowid, title, text)
        VALUES (new.id, (SELECT title FROM agents_knowledgedocument WHERE id = new.document_id), new.text);
    END
    """,
    """
    CREATE TRIGGER agents_document_fts_title AFTER UPDATE OF title ON agents_knowledgedocument BEGIN
        UPDATE agents_chunk_fts SET title = new.title
        WHERE rowid IN (SELECT id FROM agents_chunk WHERE document_id = new.id);
    END
    """,
    """
    INSERT INTO agents_chunk_fts(rowid, title, text)
    SELECT c.id, d.title, c.text FROM agents_chunk c JOIN agents_knowledgedocument d ON d.id = c.document_id
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS agents_document_fts_title",
    "DROP TRIGGER IF EXISTS agents_chunk_fts_update",
    "DROP TRIGGER IF EXISTS agents_chunk_fts_delete",
    "DROP TRIGGER IF EXISTS agents_chunk_fts_insert",
    "DROP TABLE IF EXISTS agents_chunk_fts",
]
# Must match the text expressions of agents.retrieval._POSTGRES_QUERY, or the planner ignores the indexes.
POSTGRES_FORWARD = [
    "CREATE INDEX agents_chunk_fts_gin ON agents_chunk USING GIN (to_tsvector('english'::regconfig, text))",
    "CREATE INDEX agents_chunk_fts_simple_gin ON agents_chunk USING GIN (to_tsvector('simple'::regconfig, text))",
]
POSTGRES_REVERSE = [
    "DROP INDEX IF EXISTS agents_chunk_fts_simple_gin",
    "DROP INDEX IF EXISTS agents_chunk_fts_gin",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("agents", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRES_REVERSE}),
        ),
    ]
