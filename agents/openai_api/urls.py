"""Routes of the OpenAI-compatible API, mounted at the site root (paths start with `v1/`)."""

from django.urls import path, re_path

from agents.openai_api import views

urlpatterns = [
    path("v1/models", views.models, name="openai-models"),
    path("v1/chat/completions", views.chat_completions, name="openai-chat-completions"),
    re_path(r"^v1(?:/(?P<rest>.*))?$", views.not_found),  # bare `v1` too: no APPEND_SLASH redirect
]
