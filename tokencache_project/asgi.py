"""ASGI entry point: HTTP to Django in a pool of threads, websockets through auth and an origin check.

HTTP runs Django's WSGI handler, one thread hop per request (tokencache_project/http_bridge.py
says why and what it measured); websockets run Channels' consumers on the event loop.
"""

import contextlib
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokencache_project.settings")
# Set Django up first: the routing imports need the app registry.
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from cachecore.exceptions import TokenizerUnavailable  # noqa: E402
from cachecore.tokenizers import get_tokenizer  # noqa: E402
from tokencache_project.http_bridge import ThreadedWsgiHttp  # noqa: E402
from tokencache_project.routing import websocket_urlpatterns  # noqa: E402
from tokencache_project.websocket_auth import PooledAuthMiddlewareStack  # noqa: E402

# Load the default tokenizer (a fraction of a second) as the server process starts, not in its first chat
# turn. A missing encoding is reported by the system check (cachecore.E001) and by each turn.
with contextlib.suppress(TokenizerUnavailable):
    get_tokenizer(settings.TOKENCACHE_DEFAULT_TOKENIZER)

application = ProtocolTypeRouter(
    {
        "http": ThreadedWsgiHttp(threads=settings.TOKENCACHE_HTTP_THREADS),
        "websocket": AllowedHostsOriginValidator(PooledAuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
