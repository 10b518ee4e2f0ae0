"""/metrics for the monitoring network only.

The figures say which agents are used, how much, how fast, and which processes run: not
for everyone who can reach the site. The nginx sample restricts the path too; this check
holds when another proxy, or none, sits in front. Behind a proxy, uvicorn's
`--proxy-headers` makes REMOTE_ADDR the client's address, not the proxy's.
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_prometheus.exports import ExportToDjangoView


def metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request.META.get("REMOTE_ADDR", "")):
        message = "/metrics is for the monitoring network; see TOKENCACHE_METRICS_ALLOW."
        return JsonResponse({"error": {"code": "forbidden", "message": message}}, status=403)
    return ExportToDjangoView(request)


def _allowed(address: str) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(client in network for network in settings.TOKENCACHE_METRICS_ALLOW)
