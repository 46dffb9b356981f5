"""closeguard.opentelemetry: what the SDK's in-memory reader and span exporter hold after
connections, in process against the fake server, and once under uvicorn with OpenTelemetry's
ASGI middleware outermost."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from bench.harness import ROOT, free_port, running
from closeguard import LOGGER_NAME, CloseRecord, WebSocketCloseMiddleware
from closeguard.opentelemetry import (
    DURATION_BUCKETS,
    OpenConnectionsMiddleware,
    OpenTelemetryCloseMetrics,
)
from closeguard.prometheus import OpenConnectionsMiddleware as CountOpenPrometheus
from closeguard.prometheus import PrometheusCloseMetrics
from tests.app_support import end_by_a_policy_and_by_its_words
from tests.conftest import talk
from tests.fake_server import FakeServer, websocket_scope
from tests.fuzz_support import ClientClose

CLOSES = "closeguard.websocket.closes"
DURATION = "closeguard.websocket.connection.duration"
OPEN = "closeguard.websocket.connections.open"
DRAINING = "closeguard.draining"

#: A point's attributes, as a key that compares equal whatever their order.
Attributes = frozenset[tuple[str, Any]]


def attrs(**values: Any) -> Attributes:
    """``attrs(code=1000, initiator="app")``: the point attributes closeguard would write."""
    return frozenset((f"closeguard.{name.replace('code', 'close.code')}", value)
                     for name, value in values.items())  # fmt: skip


@dataclass
class Telemetry:
    """An SDK meter provider and tracer provider of the test's own (never the global ones),
    each with the SDK's in-memory reader or exporter."""

    sampler: Sampler = ALWAYS_ON
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)

    def __post_init__(self) -> None:
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = TracerProvider(sampler=self.sampler)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()

    def points(self, name: str) -> list[Any]:
        """The data points of closeguard's instrument ``name`` (none before its first use)."""
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            if scope.scope.name == "closeguard"
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def closes(self) -> dict[Attributes, int]:
        return {frozenset(p.attributes.items()): p.value for p in self.points(CLOSES)}

    def open_connections(self) -> list[int]:
        return [point.value for point in self.points(OPEN)]

    def unit(self, name: str) -> str | None:
        data = self.reader.get_metrics_data()
        assert data is not None
        [unit] = [
            metric.unit
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
        ]
        return unit

    def duration(self) -> HistogramDataPoint:
        [point] = self.points(DURATION)
        assert isinstance(point, HistogramDataPoint)
        return point

    def server_spans(self) -> list[ReadableSpan]:
        spans = self.exporter.get_finished_spans()
        return [span for span in spans if span.kind is SpanKind.SERVER]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    made = Telemetry()
    yield made
    made.shutdown()


def close_app(
    metrics: OpenTelemetryCloseMetrics,
    on_close: Callable[[CloseRecord], None] | None = None,
    while_open: Callable[[], None] = lambda: None,
) -> Starlette:
    """A Starlette app with one route per ending, closeguard and the open count mounted as the
    docs say. ``on_close`` replaces the metrics' own hook (to keep the records as well);
    ``while_open`` runs in ``/hold`` once the connection is accepted."""

    async def bye(websocket: WebSocket) -> None:
        await websocket.accept()
        await asyncio.sleep(0.05)  # a duration that cannot be mistaken for zero
        await websocket.close(1000, "bye")

    async def boom(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("boom")

    async def refuse(websocket: WebSocket) -> None:
        await websocket.close()

    async def hold(websocket: WebSocket) -> None:
        await websocket.accept()
        while_open()
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    return Starlette(
        routes=[
            WebSocketRoute("/bye", bye),
            WebSocketRoute("/boom", boom),
            WebSocketRoute("/refuse", refuse),
            WebSocketRoute("/hold", hold),
        ],
        middleware=[
            Middleware(OpenConnectionsMiddleware, metrics=metrics),
            Middleware(WebSocketCloseMiddleware, on_close=on_close or metrics.on_close),
        ],
    )


#: The client closes with this as soon as the app waits for a message.
CLIENT_CLOSE = ClientClose(4321, b"client leaves")


async def run(app: ASGIApp, path: str, server: FakeServer | None = None) -> FakeServer:
    """One connection to ``path`` against the fake server, to its end; the server's wire."""
    server = server if server is not None else FakeServer()
    await asyncio.wait_for(app(websocket_scope(path), server.receive, server.send), timeout=5)
    return server


# The instruments ---------------------------------------------------------------------------


async def test_an_app_close_is_counted_by_code_and_initiator_and_timed(
    telemetry: Telemetry,
) -> None:
    metrics = OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider)
    records: list[CloseRecord] = []

    def keep(record: CloseRecord) -> None:
        records.append(record)
        metrics.on_close(record)

    app = close_app(metrics, on_close=keep)
    for _ in range(2):
        assert (await run(app, "/bye")).closes == [(1000, "bye")]

    assert telemetry.closes() == {attrs(code=1000, initiator="app"): 2}
    duration = telemetry.duration()
    assert duration.count == 2
    assert duration.sum == pytest.approx(sum(record.duration for record in records))
    assert duration.min >= 0.05  # the app's own pause
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert telemetry.unit(DURATION) == "s"


async def test_an_exception_is_counted_as_closeguards_1011(telemetry: Telemetry) -> None:
    app = close_app(OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider))
    server = FakeServer()
    with pytest.raises(RuntimeError, match="boom"):
        await run(app, "/boom", server)
    assert server.closes == [(1011, "internal error")]
    assert telemetry.closes() == {attrs(code=1011, initiator="middleware"): 1}


async def test_a_policy_close_is_counted_under_the_policy_s_name(telemetry: Telemetry) -> None:
    """Only closeguard's own closes with a policy's reason: an app's or a client's close with
    the same words has no policy attribute, so the attribute never carries text closeguard did
    not write."""
    metrics = OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider)
    await end_by_a_policy_and_by_its_words(metrics.on_close)
    assert telemetry.closes() == {
        attrs(code=1001, initiator="middleware", policy="idle_timeout"): 1,
        attrs(code=1008, initiator="middleware", policy="first_message_timeout"): 1,
        attrs(code=4000, initiator="app"): 1,
        attrs(code=1001, initiator="client"): 1,
    }


async def test_a_client_close_is_counted_with_the_clients_code(telemetry: Telemetry) -> None:
    app = close_app(OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider))
    await run(app, "/hold", FakeServer(client=[CLIENT_CLOSE]))
    assert telemetry.closes() == {attrs(code=4321, initiator="client"): 1}


async def test_with_no_close_frame_the_code_is_absent(telemetry: Telemetry) -> None:
    app = close_app(OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider))
    server = await run(app, "/refuse")
    assert [(frame.kind, frame.status) for frame in server.wire] == [("http", 403)]
    assert telemetry.closes() == {attrs(initiator="app"): 1}
    assert telemetry.duration().count == 1
    assert telemetry.open_connections() == []  # never accepted, never counted


async def test_open_connections_go_up_then_back_to_zero(telemetry: Telemetry) -> None:
    metrics = OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider)
    seen: list[list[int]] = []
    app = close_app(metrics, while_open=lambda: seen.append(telemetry.open_connections()))
    await run(app, "/hold", FakeServer(client=[CLIENT_CLOSE]))
    await run(app, "/hold", FakeServer(client=[CLIENT_CLOSE]))
    assert seen == [[1], [1]]
    assert telemetry.open_connections() == [0]
    with pytest.raises(RuntimeError, match="boom"):
        await run(app, "/boom")  # an exception leaving the app ends the count as well
    assert telemetry.open_connections() == [0]


# The server span ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "client", "expected"),
    [
        ("/bye", (), {"close.code": 1000, "close.reason": "bye", "initiator": "app"}),
        (
            "/boom",
            (),
            {"close.code": 1011, "close.reason": "internal error", "initiator": "middleware"},
        ),
        (
            "/hold",
            (CLIENT_CLOSE,),
            {"close.code": 4321, "close.reason": "client leaves", "initiator": "client"},
        ),
        ("/refuse", (), {"initiator": "app"}),  # no Close frame: no code, no reason
    ],
)
async def test_the_asgi_server_span_says_how_its_websocket_ended(
    telemetry: Telemetry, path: str, client: tuple[ClientClose, ...], expected: dict[str, Any]
) -> None:
    metrics = OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider)
    records: list[CloseRecord] = []

    def keep(record: CloseRecord) -> None:
        records.append(record)
        metrics.on_close(record)

    app = OpenTelemetryMiddleware(
        close_app(metrics, on_close=keep),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    escapes: AbstractContextManager[object] = (
        pytest.raises(RuntimeError, match="boom") if path == "/boom" else nullcontext()
    )
    with escapes:
        await run(app, path, FakeServer(client=client))

    [record] = records
    [span] = telemetry.server_spans()
    assert closeguard_attributes(span) == {
        **{f"closeguard.{name}": value for name, value in expected.items()},
        "closeguard.connection_id": record.connection_id,
    }


def closeguard_attributes(span: ReadableSpan) -> dict[str, Any]:
    return {
        name: value
        for name, value in (span.attributes or {}).items()
        if name.startswith("closeguard.")
    }


@pytest.mark.parametrize("tracing", ["none", "sampled out"])
async def test_without_a_recording_span_the_metrics_still_count(
    tracing: str, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = Telemetry(sampler=ALWAYS_OFF)
    metrics = OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider)
    app: ASGIApp = close_app(metrics)
    if tracing == "sampled out":
        app = OpenTelemetryMiddleware(app, tracer_provider=telemetry.tracer_provider)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    try:
        await run(app, "/bye")
    finally:
        telemetry.shutdown()
    assert telemetry.closes() == {attrs(code=1000, initiator="app"): 1}
    assert telemetry.exporter.get_finished_spans() == ()
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []


# Prometheus and OpenTelemetry together ----------------------------------------------------


async def test_prometheus_and_opentelemetry_count_the_same_connections(
    telemetry: Telemetry,
) -> None:
    registry = CollectorRegistry()
    prometheus = PrometheusCloseMetrics(registry=registry)
    otel = OpenTelemetryCloseMetrics(meter_provider=telemetry.meter_provider)
    open_counts: list[tuple[float | None, list[int]]] = []

    async def hold(websocket: WebSocket) -> None:
        await websocket.accept()
        gauge = registry.get_sample_value("closeguard_websocket_open_connections")
        open_counts.append((gauge, telemetry.open_connections()))
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def boom(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("boom")

    app = OpenTelemetryMiddleware(
        Starlette(
            routes=[WebSocketRoute("/hold", hold), WebSocketRoute("/boom", boom)],
            middleware=[
                Middleware(CountOpenPrometheus, metrics=prometheus),
                Middleware(OpenConnectionsMiddleware, metrics=otel),
                Middleware(WebSocketCloseMiddleware, on_close=[prometheus.on_close, otel.on_close]),
            ],
        ),
        tracer_provider=telemetry.tracer_provider,
    )
    await run(app, "/hold", FakeServer(client=[CLIENT_CLOSE]))
    with pytest.raises(RuntimeError, match="boom"):
        await run(app, "/boom")

    assert open_counts == [(1.0, [1])]
    assert telemetry.closes() == {
        attrs(code=4321, initiator="client"): 1,
        attrs(code=1011, initiator="middleware"): 1,
    }
    for code, initiator in [("4321", "client"), ("1011", "middleware")]:
        labels = {"code": code, "initiator": initiator, "policy": "none"}
        assert registry.get_sample_value("closeguard_websocket_closes_total", labels) == 1.0
    assert registry.get_sample_value("closeguard_websocket_open_connections") == 0.0
    assert telemetry.open_connections() == [0]
    assert [closeguard_attributes(span)["closeguard.close.code"]
            for span in telemetry.server_spans()] == [4321, 1011]  # fmt: skip


# Under uvicorn, OpenTelemetry's ASGI middleware outermost (tests/otel_app.py) --------------


def exported(path: Path) -> list[dict[str, Any]]:
    """The JSON documents the app's SDK exporters wrote, one a line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def exported_points(metrics_data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        point
        for resource in metrics_data["resource_metrics"]
        for scope in resource["scope_metrics"]
        if scope["scope"]["name"] == "closeguard"
        for metric in scope["metrics"]
        if metric["name"] == name
        for point in metric["data"]["data_points"]
    ]


async def test_under_uvicorn_the_span_and_the_metrics_match_what_the_client_received(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "tests.otel_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "CLOSEGUARD_TEST_OTEL": str(tmp_path)}
    received: dict[str, tuple[int, str]] = {}  # connection id -> the Close the client got
    with running(command, port, output=tmp_path / "server.log", env=env) as process:
        base = f"ws://127.0.0.1:{port}"
        for path, close in [
            ("/close/4000?reason=bye", None),
            ("/close/1000", None),
            ("/boom", None),
            ("/hold", (4321, "client leaves")),
        ]:
            seen = await talk(f"{base}{path}", expect_replies=1, close=close)
            assert seen.close is not None, path
            [cid] = seen.messages
            received[str(cid)] = seen.close
        assert (await talk(f"{base}/refuse")).status == 403
    # uvicorn re-raises the SIGTERM once it has shut down; a SIGKILL would mean it hung.
    assert process.returncode == -signal.SIGTERM, (tmp_path / "server.log").read_text()

    assert set(received.values()) == {
        (4000, "bye"), (1000, ""), (1011, "internal error"), (4321, "client leaves"),
    }  # fmt: skip
    server_spans = [s for s in exported(tmp_path / "spans.jsonl") if s["kind"] == "SpanKind.SERVER"]
    described = {
        span["attributes"]["closeguard.connection_id"]: span["attributes"]
        for span in server_spans
        if "closeguard.connection_id" in span["attributes"]
    }
    assert len(server_spans) == len(described) == 5  # every WebSocket's span, the refused too
    for cid, (code, reason) in received.items():
        assert described[cid]["closeguard.close.code"] == code
        assert described[cid]["closeguard.close.reason"] == reason
    initiators = {cid: attributes["closeguard.initiator"] for cid, attributes in described.items()}
    assert sorted(initiators.values()) == ["app", "app", "app", "client", "middleware"]
    [refused] = [a for cid, a in described.items() if cid not in received]
    assert "closeguard.close.code" not in refused

    [metrics_data] = exported(tmp_path / "metrics.jsonl")
    closes = {
        tuple(sorted(point["attributes"].items())): point["value"]
        for point in exported_points(metrics_data, CLOSES)
    }
    assert closes == {
        (("closeguard.close.code", 4000), ("closeguard.initiator", "app")): 1,
        (("closeguard.close.code", 1000), ("closeguard.initiator", "app")): 1,
        (("closeguard.close.code", 1011), ("closeguard.initiator", "middleware")): 1,
        (("closeguard.close.code", 4321), ("closeguard.initiator", "client")): 1,
        (("closeguard.initiator", "app"),): 1,
    }
    [duration] = exported_points(metrics_data, DURATION)
    assert duration["count"] == 5
    assert [point["value"] for point in exported_points(metrics_data, OPEN)] == [0]


# The meter provider, and the optional dependency ---------------------------------------------


def test_by_default_the_global_meter_provider_gets_the_instruments() -> None:
    """In a process of its own: the global provider can be set only once."""
    child = (
        "from opentelemetry import metrics\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "from closeguard import CloseRecord\n"
        "from closeguard.opentelemetry import OpenTelemetryCloseMetrics\n"
        "reader = InMemoryMetricReader()\n"
        "metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))\n"
        "hook = OpenTelemetryCloseMetrics().on_close\n"
        "hook(CloseRecord('id', '/ws', None, True, 1001, '', 'client', None, None, None, None,\n"
        "                 0.25, 0, 0, 0, 0))\n"
        "[scope] = reader.get_metrics_data().resource_metrics[0].scope_metrics\n"
        "print(scope.scope.name, scope.scope.version)\n"
        "for metric in scope.metrics:\n"
        "    for point in metric.data.data_points:\n"
        "        total = point.sum if metric.name.endswith('duration') else point.value\n"
        "        print(metric.name, dict(point.attributes), total)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    try:
        version: str | None = metadata.version("closeguard")
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        version = None
    assert done.stdout.splitlines() == [
        f"closeguard {version}",
        f"{CLOSES} {{'closeguard.initiator': 'client', 'closeguard.close.code': 1001}} 1",
        f"{DURATION} {{}} 0.25",
        f"{DRAINING} {{}} 0",
    ]


def test_draining_is_observed_0_then_1_once_a_drain_starts() -> None:
    """In a process of its own (a drain lasts as long as its process): observed at each
    collection, with no connection event needed."""
    child = (
        "import closeguard\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "from closeguard.opentelemetry import OpenTelemetryCloseMetrics\n"
        "reader = InMemoryMetricReader()\n"
        "OpenTelemetryCloseMetrics(meter_provider=MeterProvider(metric_readers=[reader]))\n"
        "def shown():\n"
        "    [scope] = reader.get_metrics_data().resource_metrics[0].scope_metrics\n"
        "    return [(m.name, m.unit, [p.value for p in m.data.data_points])\n"
        "            for m in scope.metrics if m.name == 'closeguard.draining']\n"
        "print(shown()); closeguard.start_drain(); print(shown())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"[('{DRAINING}', '1', [0])]",
        f"[('{DRAINING}', '1', [1])]",
    ]


@pytest.mark.parametrize("module", ["closeguard", "closeguard.asgi", "closeguard.record"])
def test_the_core_never_imports_opentelemetry(module: str) -> None:
    code = f"import sys, {module}; assert 'opentelemetry' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


def test_without_opentelemetry_api_the_error_names_the_extra() -> None:
    # None in sys.modules is how Python spells "not installed" for one import.
    code = "import sys; sys.modules['opentelemetry'] = None; import closeguard.opentelemetry"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ")
    assert ".opentelemetry needs opentelemetry-api" in last
    assert last.endswith("install it with: pip install 'closeguard[opentelemetry]'")
