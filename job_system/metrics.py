"""The /metrics endpoint: who may read it, and what it shows.

Gunicorn runs several processes and a Celery worker forks children, so each process alone
knows only its own counts. With PROMETHEUS_MULTIPROC_DIR set (the Procfile and `make run` set
it), every process on the host writes its metrics to files there and a scrape adds them up;
without it (tests, `runserver`) a scrape shows the answering process only.

Off by default: with neither METRICS_TOKEN nor METRICS_ALLOWED_IPS set, /metrics is a 404,
because metrics reveal traffic and job volumes to whoever can read them.
"""

import hmac
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def metrics_enabled() -> bool:
    return bool(settings.METRICS_TOKEN or settings.METRICS_ALLOWED_IPS)


def access_allowed(*, authorization: str, client_ip: str) -> bool:
    """A scraper may read metrics with the bearer token, or from an allowed address."""
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
        return True
    return _address_allowed(client_ip, settings.METRICS_ALLOWED_IPS)


def _address_allowed(client_ip: str, networks: Iterable[Network]) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def scrape_registry(*extra: Collector) -> CollectorRegistry:
    """The metrics of every process on this host (or of this one), plus `extra` collectors."""
    registry = CollectorRegistry()
    if settings.PROMETHEUS_MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
    else:
        # The default registry: this process's metrics, plus its CPU, memory and GC.
        registry.register(prometheus_client.REGISTRY)
    for collector in extra:
        registry.register(collector)
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve Prometheus metrics to an authorised scraper; 404 when metrics are off."""
    if not metrics_enabled():
        raise Http404
    allowed = access_allowed(
        authorization=request.headers.get("Authorization", ""),
        # The peer's address, not X-Forwarded-For, which any client can write. Behind a proxy
        # every request comes from the proxy, so use the token there.
        client_ip=request.META.get("REMOTE_ADDR", ""),
    )
    if not allowed:
        return HttpResponseForbidden("Metrics need a bearer token or an allowed address.")
    # Imported here: job_system must not import an app's models while settings load.
    from jobs.metrics import ActiveJobsCollector

    output = prometheus_client.generate_latest(scrape_registry(ActiveJobsCollector()))
    return HttpResponse(output, content_type=prometheus_client.CONTENT_TYPE_LATEST)


# --- Worker hosts ---------------------------------------------------------------------------


def serve_worker_metrics(*, address: str, port: int) -> ThreadingWSGIServer:
    """Serve this host's metrics files over HTTP from a daemon thread; return the server.

    A worker host has no web process to scrape, so the worker's main process serves the
    files its children write. Same access rules as /metrics; no database gauges, which web
    processes already report for the whole system.
    """
    server = make_server(
        address,
        port,
        _guarded(prometheus_client.make_wsgi_app(scrape_registry())),
        server_class=ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    logger.info("serving worker metrics on http://%s:%d/metrics", address, port)
    return server


def _guarded(app: Callable) -> Callable:
    def guarded_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not metrics_enabled():
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found.\n"]
        if not access_allowed(
            authorization=environ.get("HTTP_AUTHORIZATION", ""),
            client_ip=environ.get("REMOTE_ADDR", ""),
        ):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"Metrics need a bearer token or an allowed address.\n"]
        return app(environ, start_response)

    return guarded_app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Log nothing: a scrape every few seconds would drown the worker's log."""
