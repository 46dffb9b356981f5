"""The app the drain tests serve: closeguard with ``drain_file`` and ``drain_window`` from the
environment, an echo endpoint that writes down the disconnect it reads, and a push-only one.

What the endpoints saw comes back through ``$CLOSEGUARD_TEST_APP_LOG`` (one JSON line each),
closeguard's records through ``$CLOSEGUARD_TEST_LOG``, as for the wire app.
"""

from __future__ import annotations

import asyncio
import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from closeguard import WebSocketCloseMiddleware, draining
from tests.record_log import write_records_to_test_log


def _app_saw(path: str, **what: object) -> None:
    log = os.environ.get("CLOSEGUARD_TEST_APP_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps({"path": path, **what}) + "\n")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect as ended:
        _app_saw(websocket.url.path, code=ended.code, reason=ended.reason)


async def push(websocket: WebSocket) -> None:
    """Never reads: it learns of the drain only when a send fails."""
    await websocket.accept()
    for tick in range(600):  # a minute at most
        await websocket.send_text(str(tick))
        await asyncio.sleep(0.1)


async def ready(request: Request) -> PlainTextResponse:
    """A readiness check that fails while the process drains."""
    return PlainTextResponse("draining", 503) if draining() else PlainTextResponse("ready")


def build() -> WebSocketCloseMiddleware:
    write_records_to_test_log()
    app = Starlette(
        routes=[
            WebSocketRoute("/echo/{token}", echo),
            WebSocketRoute("/push/{token}", push),
            Route("/ready", ready),
        ]
    )
    return WebSocketCloseMiddleware(
        app,
        drain_file=os.environ["CLOSEGUARD_DRAIN_FILE"],
        drain_window=float(os.environ.get("CLOSEGUARD_DRAIN_WINDOW", "2")),
    )


app = build()
