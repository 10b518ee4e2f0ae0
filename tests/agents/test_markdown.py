"""Answers and documents render as Markdown, and nothing in them can run in the reader's browser."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from agents.pages.markdown import render_markdown


def test_markdown_renders_emphasis_code_lists_and_tables() -> None:
    html = render_markdown("**bold** and `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert "<li>one</li>" in html
    assert "<td>1</td>" in html


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[click](javascript:alert(1))",
        "![x](javascript:alert(1))",
        '<a href="https://example.com" onclick="alert(1)">x</a>',
        "<iframe src=https://example.com></iframe>",
        '<svg onload="alert(1)">',
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    ],
)
def test_html_and_script_links_in_the_text_never_become_live_markup(text: str) -> None:
    elements = _elements(render_markdown(text))
    assert {tag for tag, _ in elements} <= {"p", "a"}
    for _tag, attributes in elements:
        assert not [name for name in attributes if name.startswith("on")]
        assert attributes.get("href", "https:").startswith(("https:", "http:"))


def _elements(html: str) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, {name: value or "" for name, value in attrs}))

    Collect().feed(html)
    return found


def test_links_open_safely() -> None:
    assert render_markdown("[docs](https://example.com/x)") == (
        '<p><a href="https://example.com/x" rel="noopener noreferrer nofollow">docs</a></p>\n'
    )


def test_citation_marks_link_to_the_answers_own_sources_but_not_inside_code() -> None:
    html = render_markdown("Restart it [1] or see [3]. `a[1]`", citation_prefix="m7-source-", citations=2)
    assert '<a href="#m7-source-1" title="Source 1" rel="noopener noreferrer nofollow">[1]</a>' in html
    assert "[3]" in html and "#m7-source-3" not in html  # no third source
    assert "<code>a[1]</code>" in html


def test_headings_start_at_the_level_the_page_gives_them() -> None:
    html = render_markdown("# Title\n\n## Part\n\n###### Deep", heading_level=3)
    assert "<h3>Title</h3>" in html
    assert "<h4>Part</h4>" in html
    assert "<h6>Deep</h6>" in html
