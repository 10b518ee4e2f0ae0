"""The former HTTP path, for bench/throughput.py's before/after: Django's own ASGI handler.

Every sync middleware and view runs through its own `sync_to_async` hop in a thread created for
the request (tokencache_project/http_bridge.py says why the shipped app does not). Websockets as
shipped.
"""

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

django_http = get_asgi_application()

from tokencache_project.asgi import application as shipped  # noqa: E402

application = ProtocolTypeRouter({"http": django_http, "websocket": shipped.application_mapping["websocket"]})
