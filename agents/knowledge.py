"""Knowledge ingestion: documents and the chunks retrieval searches.

Every write of a document goes through these services, which rebuild its chunks in
the same transaction: a reader never sees a document whose chunks disagree with its
body, and the full-text index follows the chunks through database triggers (see the
agents migrations), so no write path can forget it.

Chunk token IDs are cached under the hash of the chunk's text, so an edited chunk
simply has a new key: nothing here needs to invalidate the token cache for
correctness. Once a write commits, a Celery task warms the new chunks and frees the
entries of the removed ones (agents/tasks.py); a broker that is down never fails a write.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from django.db import transaction

from agents.models import Agent, Chunk, KnowledgeDocument
from agents.queueing import after_commit
from cachecore.keys import text_digest
from cachecore.tokenizers import Tokenizer, get_tokenizer

# A few hundred tokens: small enough that top-k chunks fit a prompt budget of a few
# thousand tokens, large enough that a chunk carries a whole answer.
TARGET_CHUNK_TOKENS = 256

_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX_HEADING = re.compile(r"^#{1,6}\s")
_RST_UNDERLINE = re.compile(r"^([=*\-~^+#])\1{2,}\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?:;])(?=\s)")
_WORD = re.compile(r"\s*\S+")


def _blocks(text: str) -> Iterator[tuple[str, bool]]:
    """Paragraph-like blocks of `text` with whether each is a heading.

    Blank lines separate blocks, except inside fenced code, which stays whole (and a
    `# comment` in it is not a heading).
    """
    lines: list[str] = []
    in_fence = False

    def flush() -> Iterator[tuple[str, bool]]:
        block = "\n".join(lines).strip("\n")
        lines.clear()
        if block.strip():
            first, _, rest = block.partition("\n")
            atx = _ATX_HEADING.match(first) is not None
            rst = rest != "" and "\n" not in rest and _RST_UNDERLINE.match(rest) is not None
            yield block, atx or rst

    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and not line.strip():
            yield from flush()
        elif not in_fence and _ATX_HEADING.match(line) and lines:
            # A heading directly under a paragraph still starts its own block.
            yield from flush()
            lines.append(line)
        else:
            lines.append(line)
    yield from flush()


def _split_oversized(paragraph: str, *, tokenizer: Tokenizer, target_tokens: int) -> list[str]:
    """Split a paragraph longer than the target at sentence ends, else between words.

    Pieces keep their original whitespace, so code keeps its line breaks.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        if len(tokenizer.encode(sentence)) <= target_tokens:
            pieces.append(sentence)
        else:
            pieces.extend(_WORD.findall(sentence))
    packed = _pack(pieces, separator="", tokenizer=tokenizer, target_tokens=target_tokens)
    return [piece.strip() for piece in packed if piece.strip()]


def _pack(pieces: list[str], *, separator: str, tokenizer: Tokenizer, target_tokens: int) -> list[str]:
    """Join consecutive pieces greedily while the result stays within the target."""
    packed: list[str] = []
    current: list[str] = []
    current_tokens = 0
    for piece in pieces:
        tokens = len(tokenizer.encode(piece))
        if current and current_tokens + tokens + 1 > target_tokens:
            packed.append(separator.join(current))
            current, current_tokens = [], 0
        current.append(piece)
        current_tokens += tokens + (1 if len(current) > 1 else 0)
    if current:
        packed.append(separator.join(current))
    return packed


def chunk_text(text: str, *, tokenizer: Tokenizer, target_tokens: int = TARGET_CHUNK_TOKENS) -> list[str]:
    """Split a document into chunks of about `target_tokens` each.

    A heading always starts a new chunk and stays with the text under it; paragraphs
    are packed together up to the target; a paragraph longer than the target is split
    at sentence ends, and a sentence longer than that between words. A word is never
    cut, so a chunk may exceed the target by one over-long word at most.
    """
    sections: list[list[str]] = [[]]
    section_has_body = False
    for block, is_heading in _blocks(text):
        # Consecutive headings (a title, then a subtitle) stay together with the text under them.
        if is_heading and section_has_body:
            sections.append([])
            section_has_body = False
        section_has_body = section_has_body or not is_heading
        if len(tokenizer.encode(block)) > target_tokens:
            sections[-1].extend(_split_oversized(block, tokenizer=tokenizer, target_tokens=target_tokens))
        else:
            sections[-1].append(block)
    chunks: list[str] = []
    for section in sections:
        chunks.extend(_pack(section, separator="\n\n", tokenizer=tokenizer, target_tokens=target_tokens))
    return chunks


@transaction.atomic
def save_document(*, document: KnowledgeDocument) -> KnowledgeDocument:
    """Save a new or edited document and rebuild its chunks, all or nothing.

    Once committed, a task warms the new chunks (the first question after an edit is a hit)
    and frees the entries of the chunks the edit removed.
    """
    from agents import tasks

    old = set(document.chunks.values_list("content_hash", flat=True)) if document.pk else set()
    document.save()
    new = {chunk.content_hash for chunk in _rebuild_chunks(document=document)}
    after_commit(tasks.refresh_document, document.pk, stale_digests=sorted(old - new))
    return document


@transaction.atomic
def upsert_document(*, agent: Agent, source: str, title: str, body: str) -> tuple[KnowledgeDocument, bool]:
    """Create or update the agent's document with this source; returns (document, changed).

    An unchanged document is left alone, so re-running a seed rewrites nothing.
    """
    document = KnowledgeDocument.objects.select_for_update().filter(agent=agent, source=source).first()
    if document is not None and document.title == title and document.body == body:
        return document, False
    if document is None:
        document = KnowledgeDocument(agent=agent, source=source)
    document.title = title
    document.body = body
    return save_document(document=document), True


@transaction.atomic
def delete_document(*, document: KnowledgeDocument) -> None:
    """Delete a document with its chunks (the full-text index follows by trigger); a task frees their entries."""
    from agents import tasks

    digests = sorted(document.chunks.values_list("content_hash", flat=True))
    spec = document.agent.tokenizer_spec
    document.delete()
    after_commit(tasks.forget_digests, tokenizer_spec=spec, digests=digests)


def _rebuild_chunks(*, document: KnowledgeDocument) -> list[Chunk]:
    tokenizer = get_tokenizer(document.agent.tokenizer_spec)
    texts = chunk_text(document.body, tokenizer=tokenizer)
    document.chunks.all().delete()
    return Chunk.objects.bulk_create(
        Chunk(
            document=document,
            position=position,
            text=text,
            content_hash=text_digest(text),  # the token cache's own key digest
            token_count=len(tokenizer.encode(text)),
        )
        for position, text in enumerate(texts)
    )
