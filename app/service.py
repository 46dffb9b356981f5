"""The Starlette application: routes, closeguard around them, and metrics around that.

:func:`create_app` has no side effects (no environment, no logging setup), so tests build as
many apps as they like; :mod:`app.main` builds the one a server runs.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from closeguard import CloseRecord, WebSocketCloseMiddleware, connection_id, draining
from closeguard.prometheus import OpenConnectionsMiddleware, PrometheusCloseMetrics, exposition

from . import page, policies
from .records import RecentCloses
from .scenarios import ROUTES as SCENARIO_ROUTES
from .settings import Settings

__all__ = ["RememberNonce", "create_app"]


class RememberNonce:
    """Pure ASGI, around closeguard: map the page's ``?nonce=`` to closeguard's connection id.

    The query string is the one channel a page has before accept, so this works for a refused
    handshake too, closeguard's own included (a cap's or a drain's, before the app runs). The
    id is the one closeguard put in the scope, read when it is done with the connection, which
    is when the record is there to find. closeguard never logs query strings; the nonce is
    random and means nothing.
    """

    def __init__(self, app: ASGIApp, *, store: RecentCloses) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            conn_id = connection_id(scope)
            if conn_id is not None:
                nonce = QueryParams(scope.get("query_string", b"")).get("nonce")
                self.store.remember_nonce(nonce, conn_id)


def create_app(settings: Settings, *, registry: CollectorRegistry = REGISTRY) -> Starlette:
    """The service for ``settings``; its metrics go to ``registry``."""
    store = RecentCloses()
    metrics = PrometheusCloseMetrics(registry=registry)

    def on_close(record: CloseRecord) -> None:
        store.add(record)
        metrics.on_close(record)

    async def index(request: Request) -> HTMLResponse:
        return page.page(settings)

    async def healthz(request: Request) -> JSONResponse:
        """Liveness: the process answers. A draining process is alive; restarting it would
        cut the connections the drain is spreading out."""
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> JSONResponse:
        """Readiness: 503 while draining, so that the Service sends no new client here.

        The drain file is looked at too: a worker with no WebSocket open looks for it only at
        its next handshake, and the probe may reach that worker first. (A plain function:
        Starlette runs it in a thread, where a ``stat`` blocks nothing.)
        """
        drain_file = settings.drain_file
        if draining() or (drain_file is not None and os.path.exists(drain_file)):
            return JSONResponse({"status": "draining"}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics_text(request: Request) -> Response:
        body, content_type = exposition(
            registry, multiprocess_dir=settings.prometheus_multiproc_dir
        )
        return Response(body, media_type=content_type)

    async def close_record(request: Request) -> JSONResponse:
        record = store.by_connection_id(request.path_params["connection_id"])
        if record is None:
            return JSONResponse({"error": "no close record (yet) for that connection id"}, 404)
        return JSONResponse(record)

    async def close_record_by_nonce(request: Request) -> JSONResponse:
        nonce = request.query_params.get("nonce", "")
        record = store.by_nonce(nonce)
        if record is None:
            return JSONResponse({"error": "no close record (yet) for that nonce"}, 404)
        return JSONResponse(record)

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_text),
        Route("/closes", close_record_by_nonce),
        Route("/closes/{connection_id}", close_record),
        Route("/codes/{code:int}", page.describe_code),
        Route("/reconnect.js", page.reconnect_js),
        Mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static"),
        *SCENARIO_ROUTES,
        *policies.ROUTES,
    ]
    return Starlette(
        routes=routes,
        middleware=[
            # Outermost first: the open-connections gauge sees the very end of each connection.
            Middleware(OpenConnectionsMiddleware, metrics=metrics),
            Middleware(RememberNonce, store=store),
            Middleware(
                WebSocketCloseMiddleware,
                max_message_size=settings.max_message_size,
                on_close=on_close,
                drain_window=settings.drain_window,
                drain_file=settings.drain_file,
                # Each close policy on its own /ws/policy/ route, and off everywhere else.
                **policies.options(),
            ),
        ],
    )
