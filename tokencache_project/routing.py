"""Websocket routes of every app, gathered in one list for the ASGI router."""

from agents.routing import websocket_urlpatterns as agent_routes
from dashboards.routing import websocket_urlpatterns as dashboard_routes

websocket_urlpatterns = [*agent_routes, *dashboard_routes]
