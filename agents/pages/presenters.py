"""What a page shows of a message: rendered Markdown, numbered citations with links, the cache badge.

Shared by the full conversation page and the one-message fragment that the chat script fetches
when an answer has finished streaming, so a live answer and a reloaded one look the same.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from django.urls import reverse
from django.utils.html import strip_tags
from django.utils.safestring import SafeString

from agents.errors import public_error_message
from agents.models import Agent, Message
from agents.pages.markdown import render_markdown


@dataclass(frozen=True)
class Citation:
    number: int
    anchor: str
    title: str
    excerpt: str
    url: str


@dataclass(frozen=True)
class CacheBadge:
    from_cache: int
    tokenized: int
    bypassed: int
    tokens_from_cache: int
    tokens_tokenized: int
    lookup_ms: float

    @property
    def chunks(self) -> int:
        return self.from_cache + self.tokenized + self.bypassed

    @property
    def full_hit(self) -> bool:
        return self.chunks > 0 and self.from_cache == self.chunks

    @property
    def label(self) -> str:
        if not self.chunks:
            return "No knowledge used"
        if self.bypassed:
            return f"Cache bypassed · {self.chunks} chunks tokenized · {self.lookup_ms:.1f} ms"
        lookup = f"{self.lookup_ms:.1f} ms"
        return f"{self.from_cache} of {self.chunks} chunks from cache · {self.tokenized} tokenized · {lookup}"


@dataclass(frozen=True)
class ShownMessage:
    message: Message
    who: str
    body: SafeString | str
    is_answer: bool
    failed: bool
    citations: list[Citation] = field(default_factory=list)
    badge: CacheBadge | None = None

    @property
    def pk(self) -> int:
        return self.message.pk


def present(message: Message, *, agent: Agent) -> ShownMessage:
    if message.role == Message.Role.USER:
        # What a person typed is shown as text, exactly: the template escapes it.
        return ShownMessage(message=message, who="You", body=message.content, is_answer=False, failed=False)
    if message.status == Message.Status.ERROR:
        return ShownMessage(
            message=message, who=agent.name, body=public_error_message(message.error_code), is_answer=True, failed=True
        )
    anchor = f"m{message.pk}-source-"
    citations = [
        Citation(
            number=n,
            anchor=f"{anchor}{n}",
            title=str(c.get("title", "")),
            excerpt=_plain(str(c.get("excerpt", ""))),
            url=_document_url(agent, c),
        )
        for n, c in enumerate(message.citations or [], start=1)
    ]
    return ShownMessage(
        message=message,
        who=agent.name,
        body=render_markdown(message.content, heading_level=3, citation_prefix=anchor, citations=len(citations)),
        is_answer=True,
        failed=False,
        citations=citations,
        badge=CacheBadge(
            from_cache=message.cache_hits,
            tokenized=message.cache_misses,
            bypassed=message.cache_bypassed,
            tokens_from_cache=message.tokens_from_cache,
            tokens_tokenized=message.tokens_tokenized,
            lookup_ms=message.lookup_ms,
        ),
    )


def _plain(markdown: str) -> str:
    # An excerpt is a cut of a chunk's Markdown: shown as the words it says, without "##" or "**".
    return " ".join(html.unescape(strip_tags(render_markdown(markdown))).split())


def _document_url(agent: Agent, citation: dict[str, object]) -> str:
    url = reverse("agent_document", kwargs={"slug": agent.slug, "document_id": citation.get("document_id")})
    chunk = citation.get("chunk_id")
    return f"{url}?chunk={chunk}#chunk-{chunk}" if chunk else url
