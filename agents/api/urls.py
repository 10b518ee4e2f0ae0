"""Routes of the JSON API, mounted at the site root by `agents.urls` (paths start with `api/`)."""

from django.urls import path, re_path

from agents.api import cache, views

urlpatterns = [
    path("api/agents/", views.agent_list, name="api-agents"),
    path("api/agents/<str:slug>/chat", views.chat, name="api-chat"),
    path("api/conversations/", views.conversation_list, name="api-conversations"),
    path("api/conversations/<str:conversation_id>/", views.conversation_detail, name="api-conversation"),
    path("api/cache/warm", cache.warm, name="api-cache-warm"),
    path("api/cache/warm/<str:run_id>", cache.warming_run, name="api-cache-warming-run"),
    path("api/cache/invalidate", cache.invalidate, name="api-cache-invalidate"),
    path("api/schema", views.schema, name="api-schema"),
    # Anything else under api/ answers in the API's error shape, never with Django's HTML 404;
    # bare `api` too, which APPEND_SLASH would otherwise redirect (or, for a POST, fail on).
    re_path(r"^api(?:/(?P<rest>.*))?$", views.not_found),
]
