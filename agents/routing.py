"""Websocket routes of this app."""

from django.urls import URLPattern, re_path

from agents.consumers import AgentChatConsumer

websocket_urlpatterns: list[URLPattern] = [
    re_path(r"^ws/agents/(?P<slug>[^/]+)/$", AgentChatConsumer.as_asgi()),
]
