"""Run a docs example with the OpenTelemetry SDK set as the global providers, as an app's own
SDK setup does, and print what the SDK got as one JSON object.

A process of its own (``python -m tests.otel_example_run MODULE``, from the repository root):
the global providers can be set only once per process, and the test process must not keep
them. The example's ``app`` gets one WebSocket connection to ``/ws/chat`` (a route it may not
have: then a refused handshake), and a GET of ``/metrics``.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect


def main(module: str) -> dict[str, Any]:
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)

    sys.path.insert(0, "docs/examples")
    example = importlib.import_module(module)
    got: dict[str, Any] = {"messages": [], "metrics_text": None}
    with TestClient(example.app) as client:
        try:
            with client.websocket_connect("/ws/chat") as websocket:
                got["messages"].append(websocket.receive_text())
                got["close"] = websocket.receive()
        except WebSocketDisconnect as refused:
            got["refused"] = refused.code
        response = client.get("/metrics")
        if response.status_code == 200:
            got["metrics_text"] = response.text

    data = reader.get_metrics_data()
    got["points"] = [
        [metric.name, dict(point.attributes or {}), getattr(point, "value", None)]
        for resource in (data.resource_metrics if data is not None else [])
        for scope in resource.scope_metrics
        if scope.scope.name == "closeguard"
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    # The closeguard attributes of each server span that has any.
    got["span_attributes"] = [
        described
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.SERVER
        if (described := {k: v for k, v in (span.attributes or {}).items() if "closeguard" in k})
    ]
    return got


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
