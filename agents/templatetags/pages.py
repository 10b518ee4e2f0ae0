"""Template filters of the browser pages."""

from django import template
from django.utils.safestring import SafeString

from agents.pages.markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown(text: str, heading_level: int = 2) -> SafeString:
    """Markdown rendered and sanitized (agents.pages.markdown), its headings from `heading_level` down."""
    return render_markdown(text, heading_level=heading_level)
