"""The open-connections count that the metrics integrations (Prometheus, OpenTelemetry) share.

A record comes at a connection's end, so the number of connections open now cannot come from
records: it takes a middleware that sees the accept and the end. There is one such middleware,
whatever keeps the number.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.types import Message

from .asgi import ASGIApplication

__all__ = ["OpenConnectionsMetric", "OpenConnectionsMiddleware"]


class OpenConnectionsMetric(Protocol):
    """What keeps the number: a Prometheus gauge, an OpenTelemetry up-down counter."""

    def connection_opened(self) -> None: ...

    def connection_ended(self) -> None: ...


class OpenConnectionsMiddleware:
    """Pure ASGI: one up on ``websocket.accept``, one down at the end, for ``metrics``.

    Put it outside :class:`~closeguard.WebSocketCloseMiddleware`, so the end it sees comes after
    closeguard's own close (1011, 1009, 1000) and after an exception has left the app. With
    Prometheus and OpenTelemetry both, mount one for each.
    """

    def __init__(self, app: ASGIApplication, *, metrics: OpenConnectionsMetric) -> None:
        if not all(
            callable(getattr(metrics, name, None))
            for name in ("connection_opened", "connection_ended")
        ):
            raise TypeError(
                "metrics must have connection_opened() and connection_ended(), such as a "
                f"PrometheusCloseMetrics or an OpenTelemetryCloseMetrics; got {metrics!r}"
            )
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        accepted = False

        async def counting_send(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                # Count before the server sends: the number must never go below zero.
                accepted = True
                self.metrics.connection_opened()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                self.metrics.connection_ended()
