"""ASGI entry point: HTTP goes to Django, websockets through auth and an origin check."""

import contextlib
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokencache_project.settings")
# Build the Django app first: it sets up the app registry that the routing imports need.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from cachecore.exceptions import TokenizerUnavailable  # noqa: E402
from cachecore.tokenizers import get_tokenizer  # noqa: E402
from tokencache_project.routing import websocket_urlpatterns  # noqa: E402

# Load the default tokenizer (a fraction of a second) as the server process starts, not in its first chat
# turn. A missing encoding is reported by the system check (cachecore.E001) and by each turn.
with contextlib.suppress(TokenizerUnavailable):
    get_tokenizer(settings.TOKENCACHE_DEFAULT_TOKENIZER)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
