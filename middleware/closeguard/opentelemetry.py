"""OpenTelemetry metrics and span attributes from close records: the Prometheus module's twin.

An optional integration (``pip install 'closeguard[opentelemetry]'``) on ``opentelemetry-api``
alone: a library depends on the API and the app picks the SDK and its exporters; with no SDK
configured every call here is a no-op. Nothing else in ``closeguard`` imports this module. Use
it as::

    metrics = OpenTelemetryCloseMetrics()   # the global meter provider
    app = Starlette(routes=..., middleware=[
        Middleware(OpenTelemetryMiddleware),                 # its server span, if you trace
        Middleware(OpenConnectionsMiddleware, metrics=metrics),   # sees the real end
        Middleware(WebSocketCloseMiddleware, on_close=metrics.on_close),
    ])

OpenTelemetry's semantic conventions define no attributes for how a WebSocket closed, so every
name here is in closeguard's own namespace (``closeguard.``), as the conventions ask of a
project's own names; none borrows a convention's meaning it does not have.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from .drain import draining
from .open_connections import OpenConnectionsMiddleware
from .record import CloseRecord, policy_of

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # an optional dependency: say which extra brings it
    raise ImportError(
        f"{__name__} needs opentelemetry-api ({exc}); "
        "install it with: pip install 'closeguard[opentelemetry]'"
    ) from exc

__all__ = ["DURATION_BUCKETS", "OpenConnectionsMiddleware", "OpenTelemetryCloseMetrics"]

#: The histogram's advised bucket bounds, in seconds, the Prometheus module's own: the SDK's
#: defaults (0 to 10,000) are made for milliseconds, and WebSocket connections live from
#: milliseconds (a refused handshake) to hours (a dashboard). A View in the app overrides them.
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0)

#: The instrumentation scope: the name every closeguard instrument is found under.
METER_NAME = "closeguard"


def _version() -> str | None:
    """The installed closeguard's version for the meter, or None when run from a source tree."""
    try:
        return metadata.version("closeguard")
    except metadata.PackageNotFoundError:
        return None


class OpenTelemetryCloseMetrics:
    """The four instruments; :meth:`on_close` is the ``on_close`` hook that feeds two of them
    and, when a recording span is current, tells that span how its WebSocket ended.

    ``meter_provider=None`` uses the global one (``opentelemetry.metrics.get_meter_provider()``,
    read now: set the SDK's provider before creating this). Pass a provider of your own for
    tests, or to keep closeguard's instruments apart.
    """

    def __init__(self, *, meter_provider: otel_metrics.MeterProvider | None = None) -> None:
        if meter_provider is None:
            meter_provider = otel_metrics.get_meter_provider()
        meter = meter_provider.get_meter(METER_NAME, _version())
        self.closes = meter.create_counter(
            "closeguard.websocket.closes",
            unit="{connection}",
            description="WebSocket connections ended, by close code (absent when no Close frame "
            "was sent, as for a refused handshake), by who ended them "
            "(app, client, middleware, server) and by the policy that ended them "
            "(draining, idle_timeout, ...; absent for others).",
        )
        self.duration = meter.create_histogram(
            "closeguard.websocket.connection.duration",
            unit="s",
            description="How long WebSocket connections lasted, from the handshake to the last "
            "event.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.open = meter.create_up_down_counter(
            "closeguard.websocket.connections.open",
            unit="{connection}",
            description="WebSocket connections accepted and not yet ended.",
        )
        # Observed at each collection, in the process that drains: an exporter sends each
        # process's points with its own resource, so no value need be shared between workers.
        self.draining = meter.create_observable_gauge(
            "closeguard.draining",
            callbacks=[_observe_draining],
            unit="1",
            description="1 while this process drains its WebSockets (closeguard.start_drain or "
            "the drain file), else 0.",
        )

    def on_close(self, record: CloseRecord) -> None:
        """Count one ended connection and describe it on the current span; pass this as the
        middleware's ``on_close``.

        closeguard calls its hooks in the connection's own task before it returns to the server,
        so an ASGI tracing middleware outside it (OpenTelemetry's ``OpenTelemetryMiddleware``)
        still has its server span current here. The code and reason are left out when no Close
        frame was sent: an attribute has no None, and a made-up code would read as a real one.
        """
        labels: dict[str, AttributeValue] = {"closeguard.initiator": record.initiator}
        if record.code is not None:
            labels["closeguard.close.code"] = record.code
        policy = policy_of(record)
        if policy is not None:
            labels["closeguard.policy"] = policy
        self.closes.add(1, labels)
        self.duration.record(record.duration)
        span = trace.get_current_span()
        if not span.is_recording():  # no span, or one sampled out: nobody would see it
            return
        # A dict of its own: the SDK keeps the one given to ``add`` as the point's attributes.
        described: dict[str, AttributeValue] = {
            **labels,
            "closeguard.connection_id": record.connection_id,
        }
        if record.code is not None:
            described["closeguard.close.reason"] = record.reason
        span.set_attributes(described)

    def connection_opened(self) -> None:
        """For :class:`OpenConnectionsMiddleware`."""
        self.open.add(1)

    def connection_ended(self) -> None:
        """For :class:`OpenConnectionsMiddleware`."""
        self.open.add(-1)


def _observe_draining(options: otel_metrics.CallbackOptions) -> Iterable[otel_metrics.Observation]:
    return [otel_metrics.Observation(1 if draining() else 0)]
