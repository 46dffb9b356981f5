"""The app the OpenTelemetry test serves under uvicorn: OpenTelemetry's ASGI middleware
outermost, then the open count and closeguard, as docs/metrics.md mounts them.

The server runs in its own process, so what the SDK got comes back through files in
``$CLOSEGUARD_TEST_OTEL``: every finished span as one JSON line in ``spans.jsonl`` (the SDK's
console exporter, written as each span ends), and what its in-memory metric reader holds as
one JSON line in ``metrics.jsonl``, written when the app's lifespan ends. uvicorn ends it after
the connections, then re-raises the SIGTERM it was sent, so the SDK's own shutdown at exit
never runs. Each route first sends the client closeguard's id for its connection, so that the
test finds the connection's span.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from closeguard import WebSocketCloseMiddleware, connection_id
from closeguard.opentelemetry import OpenConnectionsMiddleware, OpenTelemetryCloseMetrics

OUT = Path(os.environ["CLOSEGUARD_TEST_OTEL"])

tracer_provider = TracerProvider()
tracer_provider.add_span_processor(
    SimpleSpanProcessor(
        ConsoleSpanExporter(
            out=(OUT / "spans.jsonl").open("a", encoding="utf-8"),
            formatter=lambda span: span.to_json(indent=None) + "\n",
        )
    )
)
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
metrics = OpenTelemetryCloseMetrics(meter_provider=meter_provider)


async def tell_id(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(connection_id(websocket.scope) or "no id")


async def close_with(websocket: WebSocket) -> None:
    await tell_id(websocket)
    code = int(websocket.path_params["code"])
    await websocket.close(code, websocket.query_params.get("reason", ""))


async def boom(websocket: WebSocket) -> None:
    await tell_id(websocket)
    raise RuntimeError("boom")


async def hold(websocket: WebSocket) -> None:
    """Until the client closes."""
    await tell_id(websocket)
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def refuse(websocket: WebSocket) -> None:
    await websocket.close()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    data = reader.get_metrics_data()
    with (OUT / "metrics.jsonl").open("a", encoding="utf-8") as out:
        out.write(("null" if data is None else data.to_json(indent=None)) + "\n")
    meter_provider.shutdown()
    tracer_provider.shutdown()


app = OpenTelemetryMiddleware(
    Starlette(
        routes=[
            WebSocketRoute("/close/{code:int}", close_with),
            WebSocketRoute("/boom", boom),
            WebSocketRoute("/hold", hold),
            WebSocketRoute("/refuse", refuse),
        ],
        middleware=[
            Middleware(OpenConnectionsMiddleware, metrics=metrics),
            Middleware(WebSocketCloseMiddleware, on_close=metrics.on_close),
        ],
        lifespan=lifespan,
    ),
    tracer_provider=tracer_provider,
    meter_provider=meter_provider,
)
