"""OpenTelemetry for any app: closes by code and initiator, durations, open connections, and
how each WebSocket ended, on the server span of OpenTelemetry's ASGI middleware."""

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from closeguard import WebSocketCloseMiddleware
from closeguard.opentelemetry import OpenConnectionsMiddleware, OpenTelemetryCloseMetrics

# The global meter provider: the app's SDK setup (or `opentelemetry-instrument`) sets it.
metrics = OpenTelemetryCloseMetrics()


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close(1000, "bye")


app = Starlette(
    routes=[WebSocketRoute("/ws/chat", chat)],
    middleware=[
        Middleware(OpenTelemetryMiddleware),  # outermost: its span is current in on_close
        Middleware(OpenConnectionsMiddleware, metrics=metrics),
        Middleware(WebSocketCloseMiddleware, on_close=metrics.on_close),
    ],
)
