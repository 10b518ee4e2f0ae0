"""Markdown from the knowledge base and from models, rendered to HTML that is safe to show.

Answers are written by a model (or quoted from documents anyone with the admin may edit), so
their HTML is untrusted twice over: markdown-it-py runs with raw HTML turned off, so `<script>` in
an answer stays text, and nh3 (a Rust HTML sanitizer) then keeps only a fixed set of tags and
attributes and only http(s) and mailto links, so a `javascript:` link or an `onerror` cannot
survive either step alone failing.
"""

from __future__ import annotations

import re
from functools import cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "sup",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
# "[2]" in an answer cites the answer's second citation (the extractive backend writes them; models
# are asked to). Markdown links are already <a> tags when this runs, so a bare "[2]" is a citation.
_CITATION_MARK = re.compile(r"\[(\d{1,2})\]")
_HEADING = re.compile(r"<(/?)h([1-6])>")


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
        ["table", "strikethrough"]
    )


def render_markdown(
    text: str, *, heading_level: int = 1, citation_prefix: str | None = None, citations: int = 0
) -> SafeString:
    """`text` as sanitized HTML; with `citation_prefix`, `[n]` (1 <= n <= citations) links to `#<prefix>n`.

    `heading_level` is the level the text's own top heading (`#`) takes, so a document or an answer
    shown under the page's `<h1>` keeps one outline instead of starting a second one.
    """
    html = _parser().render(text)
    if heading_level > 1:
        html = _HEADING.sub(lambda m: f"<{m.group(1)}h{min(6, int(m.group(2)) + heading_level - 1)}>", html)
    if citation_prefix is not None and citations:
        html = _link_citations(html, prefix=citation_prefix, count=citations)
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitized by nh3 just above


def _link_citations(html: str, *, prefix: str, count: int) -> str:
    # Only outside <code> and <pre>: split on them and rewrite the text between.
    parts = re.split(r"(<pre>.*?</pre>|<code>.*?</code>)", html, flags=re.DOTALL)

    def link(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if not 1 <= number <= count:
            return match.group(0)
        return f'<a href="#{prefix}{number}" title="Source {number}">[{number}]</a>'

    return "".join(part if part.startswith(("<pre>", "<code>")) else _CITATION_MARK.sub(link, part) for part in parts)
