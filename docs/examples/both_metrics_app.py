"""Prometheus and OpenTelemetry together: a counting middleware for each, both hooks in
``on_close``, and ``/metrics`` for Prometheus to scrape."""

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from closeguard import WebSocketCloseMiddleware
from closeguard import opentelemetry as otel
from closeguard import prometheus as prom

registry = CollectorRegistry()  # or prometheus_client's REGISTRY, as multiprocess mode needs
prometheus_metrics = prom.PrometheusCloseMetrics(registry=registry)
otel_metrics = otel.OpenTelemetryCloseMetrics()  # the global meter provider


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = prom.exposition(registry)
    return Response(body, media_type=content_type)


app = Starlette(
    routes=[Route("/metrics", metrics_endpoint)],
    middleware=[
        Middleware(OpenTelemetryMiddleware),
        Middleware(prom.OpenConnectionsMiddleware, metrics=prometheus_metrics),
        Middleware(otel.OpenConnectionsMiddleware, metrics=otel_metrics),
        Middleware(
            WebSocketCloseMiddleware,
            on_close=[prometheus_metrics.on_close, otel_metrics.on_close],
        ),
    ],
)
