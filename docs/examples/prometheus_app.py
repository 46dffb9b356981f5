"""Prometheus metrics for any app: closes by code and initiator, durations, open sockets."""

import os

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from closeguard import WebSocketCloseMiddleware
from closeguard.prometheus import OpenConnectionsMiddleware, PrometheusCloseMetrics, exposition

registry = CollectorRegistry()  # or prometheus_client's REGISTRY, as multiprocess mode needs
metrics = PrometheusCloseMetrics(registry=registry)


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = exposition(
        registry, multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    )
    return Response(body, media_type=content_type)


app = Starlette(
    routes=[WebSocketRoute("/ws/echo", echo), Route("/metrics", metrics_endpoint)],
    middleware=[
        Middleware(OpenConnectionsMiddleware, metrics=metrics),  # outermost
        Middleware(WebSocketCloseMiddleware, on_close=metrics.on_close),
    ],
)
