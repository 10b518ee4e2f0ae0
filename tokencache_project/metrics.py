"""/metrics for the monitoring network only.

The figures say which agents are used, how much, how fast, and which processes run: not
for everyone who can reach the site. The nginx sample restricts the path too; this check
also holds with no proxy in front. Behind a proxy it sees the client's address only if
the proxy sets X-Forwarded-For and uvicorn trusts it (`--proxy-headers`, with the proxy in
`--forwarded-allow-ips`): a proxy that does not makes every client look like the proxy,
so never allow a proxy's own address for a path it serves to the public.
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_prometheus.exports import ExportToDjangoView


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text for allowed addresses; 403 with a JSON reason for everyone else."""
    if not _allowed(request.META.get("REMOTE_ADDR", "")):
        message = "/metrics is for the monitoring network; see TOKENCACHE_METRICS_ALLOW."
        return JsonResponse({"error": {"code": "forbidden", "message": message}}, status=403)
    return ExportToDjangoView(request)


def _allowed(address: str) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped:
        client = client.ipv4_mapped  # ::ffff:127.0.0.1, as a server bound to :: reports IPv4 clients
    return any(client in network for network in settings.TOKENCACHE_METRICS_ALLOW)
