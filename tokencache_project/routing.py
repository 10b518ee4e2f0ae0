"""Websocket routes of every app, gathered in one list for the ASGI router."""

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

from agents.consumers import CLOSE_NOT_FOUND
from agents.routing import websocket_urlpatterns as agent_routes
from dashboards.routing import websocket_urlpatterns as dashboard_routes


class NoSuchSocket(AsyncWebsocketConsumer):
    """Refuses the handshake on a path no app routes (HTTP 403 to the client).

    Without it Channels' router raises ValueError for such a path: any client could make
    the server answer 500 and log a traceback.
    """

    async def connect(self) -> None:
        await self.close(code=CLOSE_NOT_FOUND)


# Last, and (?s) so that "." also matches a newline a client put in the path.
websocket_urlpatterns = [*agent_routes, *dashboard_routes, re_path(r"(?s)^.*$", NoSuchSocket.as_asgi())]
