"""HTTP routes of this app: the browser pages, the JSON API under `api/`, the OpenAI-compatible API under `v1/`."""

from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("", include("agents.pages.urls")),
    path("", include("agents.api.urls")),
    path("", include("agents.openai_api.urls")),
]
