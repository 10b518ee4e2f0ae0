"""HTTP routes of this app: the home page, the JSON API under `api/`, the OpenAI-compatible API under `v1/`."""

from django.urls import URLPattern, URLResolver, include, path

from agents import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="home"),
    path("", include("agents.api.urls")),
    path("", include("agents.openai_api.urls")),
]
