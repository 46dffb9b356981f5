"""The app the close-policy tests serve: one route per policy, each set per route through a
callable (the way ``max_message_size`` is), and an echo that writes down the disconnect it reads.

What the endpoints saw comes back through ``$CLOSEGUARD_TEST_APP_LOG``, closeguard's records
through ``$CLOSEGUARD_TEST_LOG``, as for the wire app.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect

from closeguard import WebSocketCloseMiddleware
from tests.record_log import write_records_to_test_log

IDLE, LIFETIME, FIRST, RATE, CAP = 1.0, 1.5, 1.0, 5.0, 2


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    heard = 0
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
            heard += 1
    except WebSocketDisconnect as ended:
        _app_saw(websocket.url.path, code=ended.code, heard=heard)


def _app_saw(path: str, **what: object) -> None:
    log = os.environ.get("CLOSEGUARD_TEST_APP_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps({"path": path, **what}) + "\n")


def on(route: str, value: float) -> Callable[[Scope], float | None]:
    """The option's value on ``/{route}/...`` only: off everywhere else."""

    def per_route(scope: Scope) -> float | None:
        return value if str(scope.get("path", "")).startswith(f"/{route}/") else None

    return per_route


def build() -> WebSocketCloseMiddleware:
    write_records_to_test_log()
    routes = [WebSocketRoute(f"/{name}/{{token}}", echo) for name in ("idle", "life", "first")]
    routes += [WebSocketRoute(f"/{name}/{{token}}", echo) for name in ("rate", "cap", "free")]
    return WebSocketCloseMiddleware(
        Starlette(routes=routes),
        idle_timeout=on("idle", IDLE),
        max_lifetime=on("life", LIFETIME),
        first_message_timeout=on("first", FIRST),
        max_messages_per_second=on("rate", RATE),
        max_connections=lambda scope: CAP if scope["path"].startswith("/cap/") else None,
    )


app = build()
