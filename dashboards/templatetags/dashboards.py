"""Small template filters for the dashboard pages."""

from typing import Any

from django import template

register = template.Library()


@register.filter
def get(mapping: Any, key: str) -> Any:
    return mapping.get(key)


@register.filter
def split(text: str) -> list[str]:
    return text.split()


@register.inclusion_tag("dashboards/_breaker_banner.html")
def breaker_banner() -> dict[str, Any]:
    """The admin index's warning when a breaker is open or half-open, or a record is stale."""
    from dashboards.live import breaker_summary

    return {"breakers": breaker_summary()}
