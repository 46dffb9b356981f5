"""Prometheus metrics from close records: closes by code and initiator, durations, open sockets.

An optional integration (``pip install 'closeguard[prometheus]'``): nothing else in
``closeguard`` imports this module, so the core never needs ``prometheus_client``. Use it as::

    metrics = PrometheusCloseMetrics()
    app = Starlette(routes=..., middleware=[
        Middleware(OpenConnectionsMiddleware, metrics=metrics),   # outermost: sees the real end
        Middleware(WebSocketCloseMiddleware, on_close=metrics.on_close),
    ])

and serve :func:`exposition` at ``/metrics``. ``closeguard_draining`` is 1 while a drain is
under way (:func:`closeguard.start_drain` or the drain file). Under ``uvicorn --workers N``
every worker is a process with its own counters; prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before the workers start) shares them through files, and
:func:`exposition` merges them when given that directory.
"""

from __future__ import annotations

import contextlib
import glob
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from .drain import draining
from .open_connections import OpenConnectionsMiddleware
from .record import CloseRecord, policy_of

__all__ = ["DURATION_BUCKETS", "OpenConnectionsMiddleware", "PrometheusCloseMetrics", "exposition"]

#: WebSocket connections live from milliseconds (a refused handshake) to hours (a dashboard).
DURATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0)


class PrometheusCloseMetrics:
    """The four metrics; :meth:`on_close` is the ``on_close`` hook that feeds two of them.

    ``registry=None`` creates the metrics without registering them (for tests, or to register
    them yourself). In multiprocess mode leave the default: prometheus_client writes every
    process's values to files and :func:`exposition` reads them back.
    """

    def __init__(
        self,
        *,
        namespace: str = "closeguard",
        registry: CollectorRegistry | None = REGISTRY,
        buckets: tuple[float, ...] = DURATION_BUCKETS,
    ) -> None:
        self.closes = Counter(
            "websocket_closes",
            "WebSocket connections ended, by close code ('none' when no Close frame was sent, "
            "as for a refused handshake), by who ended them (app, client, middleware, server) "
            "and by the policy that ended them (draining, idle_timeout, ...; 'none' for others).",
            ["code", "initiator", "policy"],
            namespace=namespace,
            registry=registry,
        )
        self.duration = Histogram(
            "websocket_connection_duration_seconds",
            "How long WebSocket connections lasted, from the handshake to the last event.",
            namespace=namespace,
            registry=registry,
            buckets=buckets,
        )
        self.open = Gauge(
            "websocket_open_connections",
            "WebSocket connections accepted and not yet ended.",
            namespace=namespace,
            registry=registry,
            # Summed over the worker processes that are alive (multiprocess mode only).
            multiprocess_mode="livesum",
        )
        self.draining = Gauge(
            "draining",
            "1 while this process drains its WebSockets (closeguard.start_drain or the drain "
            "file), else 0; with several worker processes, 1 while any of them drains.",
            namespace=namespace,
            registry=registry,
            # The largest value among the worker processes that are alive (multiprocess only).
            multiprocess_mode="livemax",
        )
        # One process: read at each scrape, so it is never late. Several: a scrape reads the
        # workers' files, so each worker also writes its value at its connections' events
        # (below): a drain closes or refuses connections, and its first close writes the 1.
        self.draining.set_function(lambda: 1.0 if draining() else 0.0)
        self._draining_written = False

    def on_close(self, record: CloseRecord) -> None:
        """Count one ended connection; pass this as the middleware's ``on_close``."""
        code = "none" if record.code is None else str(record.code)
        policy = policy_of(record) or "none"
        self.closes.labels(code=code, initiator=record.initiator, policy=policy).inc()
        self.duration.observe(record.duration)
        self._write_draining()

    def connection_opened(self) -> None:
        """For :class:`OpenConnectionsMiddleware`."""
        self.open.inc()
        self._write_draining()

    def connection_ended(self) -> None:
        """For :class:`OpenConnectionsMiddleware`."""
        self.open.dec()
        self._write_draining()

    def _write_draining(self) -> None:
        """Write 1 once the drain has begun (a drain never ends in a process). ``set`` still
        writes the multiprocess file when a function gives the in-process value."""
        if not self._draining_written and draining():
            self._draining_written = True
            self.draining.set(1)


def _forget_dead_processes(path: str) -> None:
    """Drop the live-gauge files of worker processes that are gone.

    prometheus_client leaves that to a server hook (gunicorn's ``child_exit``); uvicorn has no
    such hook, so a killed worker's open connections would be counted forever. A dead pid's
    counters and histograms are kept.
    """
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid_text = os.path.basename(file).rsplit("_", 1)[-1].removesuffix(".db")
        if pid_text.isdigit() and not _alive(int(pid_text)):
            # What prometheus_client's mark_process_dead does; another worker may race us.
            with contextlib.suppress(FileNotFoundError):
                os.remove(file)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs in this pid namespace. A worker killed and not yet reaped by its
    master is a zombie: it exists, and it is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read()
    except OSError:
        return True  # no /proc (macOS): that it exists is all there is to know
    # "pid (command) state ...": the command may hold spaces and parentheses.
    return fields.rpartition(")")[2].split()[:1] != ["Z"]


def exposition(
    registry: CollectorRegistry = REGISTRY, *, multiprocess_dir: str | None = None
) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` response.

    With ``multiprocess_dir`` (the app's ``PROMETHEUS_MULTIPROC_DIR``), the values of every
    worker process are merged from their files, whichever worker answers the scrape.
    """
    if multiprocess_dir is not None:
        _forget_dead_processes(multiprocess_dir)
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
