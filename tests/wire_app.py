"""The app the wire tests run under real servers: one route per scenario, closeguard in front.

Servers run it in their own process, so the records come back through a file: the
``closeguard`` logger writes each log record it emits as one JSON line to
``$CLOSEGUARD_TEST_LOG``. Every route ends in a ``{token}`` the test makes up, so a test
finds its own connection's record among all the others by its path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from closeguard import (
    CloseRecord,
    InvalidCloseCode,
    WebSocketCloseMiddleware,
    connection_id,
)
from tests.record_log import write_records_to_test_log

#: Small enough to reach quickly, and below every server's own limit.
DEFAULT_LIMIT = 4096
SMALL_LIMIT = 16


def _write_hook_call(record: CloseRecord, hook: str) -> None:
    path = os.environ.get("CLOSEGUARD_TEST_HOOKS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({**record.as_dict(), "hook": hook}) + "\n")


def on_close(record: CloseRecord) -> None:
    """Every ``on_close`` call as one JSON line in ``$CLOSEGUARD_TEST_HOOKS``, when set."""
    _write_hook_call(record, "plain")


async def on_close_async(record: CloseRecord) -> None:
    """The same from an ``async def`` hook that awaits first, as one storing records does: it
    must run at every ending the plain one does, shutdowns and process exits included."""
    await anyio.lowlevel.checkpoint()
    _write_hook_call(record, "async")


#: Both kinds of hook, as a user with metrics and a record store mounts them.
HOOKS = [on_close, on_close_async]


async def on_close_slow(record: CloseRecord) -> None:
    """A record store as slow as the connection's path says, ``/hooked/{how}/...``: ``sleep-N``
    awaits N seconds; ``thread-N`` blocks a worker thread N seconds, as a blocking driver run
    through ``run_in_threadpool`` does; ``hang`` never ends and swallows every cancellation;
    ``cancelled`` raises CancelledError of its own. Once done, it writes its call as the "slow"
    hook."""
    kind, _, seconds = record.path.split("/")[2].partition("-")
    if kind == "sleep":
        await asyncio.sleep(float(seconds))
    elif kind == "thread":
        await run_in_threadpool(time.sleep, float(seconds))
    elif kind == "cancelled":
        await anyio.lowlevel.checkpoint()
        raise asyncio.CancelledError
    elif kind == "hang":
        for _ in range(1000):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue
    _write_hook_call(record, "slow")


class BrokenHandler(logging.Handler):
    """A log shipper whose sink is down: ``emit`` raises."""

    def emit(self, record: logging.LogRecord) -> None:
        raise ConnectionRefusedError("the log sink is down")


def _broken_logger() -> logging.Logger:
    logger = logging.getLogger("closeguard.tests.broken")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(BrokenHandler())
    return logger


# Starlette endpoints --------------------------------------------------------------------


async def close_with(websocket: WebSocket) -> None:
    await websocket.accept()
    code = int(websocket.path_params["code"])
    await websocket.close(code, websocket.query_params.get("reason", ""))


async def raise_after_accept(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RuntimeError("secret detail from the database: password=hunter2")


async def raise_before_accept(websocket: WebSocket) -> None:
    raise RuntimeError("failed before accept")


async def refuse(websocket: WebSocket) -> None:
    await websocket.close(4001, "not allowed")


async def return_without_close(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("ready")


async def tell_id(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(connection_id(websocket.scope) or "no id")
    await websocket.close()


async def echo(websocket: WebSocket) -> None:
    """Echo until the client leaves; the WebSocketDisconnect that ends it is left to propagate."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


async def echo_text(websocket: WebSocket) -> None:
    """The usual Starlette loop: receive_text raises WebSocketDisconnect when the peer leaves."""
    await websocket.accept()
    while True:
        await websocket.send_text(await websocket.receive_text())


async def busy(websocket: WebSocket) -> None:
    """Accept, then work a minute without reading: a server's shutdown must cancel it."""
    await websocket.accept()
    await asyncio.sleep(60)


async def ticker(websocket: WebSocket) -> None:
    """Only sends, never reads: a client's close reaches it as a failed send."""
    await websocket.accept()
    while True:
        await websocket.send_text("tick")
        await asyncio.sleep(0.005)


#: Headers a server cannot send: a value holding CR/LF, and str where ASGI says bytes.
BAD_ACCEPT_HEADERS: dict[str, Any] = {
    "crlf": [(b"x-bad", b"one\r\nx-injected: two")],
    "str": [("x-str", "value")],
}


async def bad_accept(websocket: WebSocket) -> None:
    await websocket.accept(headers=BAD_ACCEPT_HEADERS[websocket.path_params["kind"]])
    await websocket.send_text("accepted")
    await websocket.close()


async def slow_accept(websocket: WebSocket) -> None:
    """Accept only after the client may have left."""
    await asyncio.sleep(float(websocket.query_params.get("delay", "0.8")))
    await websocket.accept()
    await websocket.send_text("accepted")
    await websocket.receive_text()


#: Larger than any socket buffer: a client that does not read leaves the server's send waiting.
FLOOD_BYTES = 8 * 1024 * 1024


async def flood(websocket: WebSocket) -> None:
    """Send more than a non-reading client can take, then return (closeguard's 1000 is due)
    or raise (its 1011 is due): that close waits in the server's send."""
    await websocket.accept()
    await websocket.send_bytes(b"x" * FLOOD_BYTES)
    if websocket.path_params["then"] == "raise":
        raise RuntimeError("failed after the flood")


# Raw ASGI apps: what only the ASGI level can do ------------------------------------------


async def raw_recover(scope: Scope, receive: Receive, send: Send) -> None:
    """Try an invalid close, catch closeguard's error, then close validly."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    code = int(scope["path"].split("/")[3])
    try:
        await send({"type": "websocket.close", "code": code, "reason": "bye"})
    except InvalidCloseCode as exc:
        await send({"type": "websocket.close", "code": 4000, "reason": f"rejected {exc.code}"})


async def raw_send_after_close(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4002, "reason": "done"})
    await send({"type": "websocket.send", "text": "too late"})


def scenarios() -> Starlette:
    """The scenario routes alone: ``build`` puts closeguard in front, ``bare_app`` does not."""
    return Starlette(
        routes=[
            WebSocketRoute("/close/{code:int}/{token}", close_with),
            WebSocketRoute("/raise/{token}", raise_after_accept),
            WebSocketRoute("/raise-before-accept/{token}", raise_before_accept),
            WebSocketRoute("/refuse/{token}", refuse),
            WebSocketRoute("/return/{token}", return_without_close),
            WebSocketRoute("/echo/{token}", echo),
            WebSocketRoute("/id/{token}", tell_id),
            WebSocketRoute("/small/echo/{token}", echo),
            WebSocketRoute("/echo-text/{token}", echo_text),
            WebSocketRoute("/ticker/{token}", ticker),
            WebSocketRoute("/busy/{token}", busy),
            WebSocketRoute("/bad-accept/{kind}/{token}", bad_accept),
            WebSocketRoute("/slow-accept/{token}", slow_accept),
            WebSocketRoute("/flood/{then}/{token}", flood),
        ]
    )


def _limit(scope: Scope) -> int | None:
    return SMALL_LIMIT if scope["path"].startswith("/small/") else DEFAULT_LIMIT


class PrefixRouter:
    """Send each path prefix to its own closeguard configuration."""

    def __init__(self, routes: dict[str, ASGIApp], default: ASGIApp) -> None:
        self.routes = routes
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for prefix, app in self.routes.items():
            if scope.get("path", "").startswith(prefix):
                await app(scope, receive, send)
                return
        await self.default(scope, receive, send)


def build() -> ASGIApp:
    write_records_to_test_log()
    inner = scenarios()
    return PrefixRouter(
        {
            "/raw/recover/": WebSocketCloseMiddleware(raw_recover),
            "/raw/send-after-close/": WebSocketCloseMiddleware(raw_send_after_close),
            "/replace/": WebSocketCloseMiddleware(
                _strip("/replace", inner), invalid_close="replace"
            ),
            "/swallow/": WebSocketCloseMiddleware(_strip("/swallow", inner), reraise=False),
            "/broken-log/": WebSocketCloseMiddleware(
                _strip("/broken-log", inner), logger=_broken_logger(), on_close=HOOKS
            ),
            "/hooked/": WebSocketCloseMiddleware(
                _strip_segments(2, inner),
                max_message_size=_limit,
                on_close=[on_close_slow, on_close_async],
            ),
        },
        default=WebSocketCloseMiddleware(inner, max_message_size=_limit, on_close=HOOKS),
    )


def _strip_segments(count: int, app: ASGIApp) -> ASGIApp:
    """Serve ``app`` without the first ``count`` segments of the path (``/hooked/{how}``)."""

    async def stripped(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        await _strip(path[: len("/".join(path.split("/")[: count + 1]))], app)(scope, receive, send)

    return stripped


def _strip(prefix: str, app: ASGIApp) -> ASGIApp:
    """Serve ``app`` under ``prefix`` while the record keeps the full path."""

    async def stripped(scope: Scope, receive: Receive, send: Send) -> None:
        inner_scope = dict(scope)
        inner_scope["path"] = scope["path"][len(prefix) :]
        await app(inner_scope, receive, send)

    return stripped


app = build()
