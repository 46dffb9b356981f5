"""Quart, mounted as docs/examples/quart_app.py shows: ``app.asgi_app`` wrapped, and
``PROPAGATE_EXCEPTIONS`` on, so that a WebSocket's exception reaches closeguard."""

from __future__ import annotations

from quart import Quart, websocket

from closeguard import WebSocketCloseMiddleware
from tests.framework_apps import LIMIT, SECRET
from tests.record_log import write_records_to_test_log

app = Quart(__name__)
app.config["PROPAGATE_EXCEPTIONS"] = True


@app.websocket("/close/<int:code>/<token>")
async def close_with(code: int, token: str) -> None:
    await websocket.accept()
    await websocket.close(code, websocket.args.get("reason", ""))


@app.websocket("/raise/<token>")
async def raise_after_accept(token: str) -> None:
    await websocket.accept()
    raise RuntimeError(SECRET)


@app.websocket("/return/<token>")
async def return_without_close(token: str) -> None:
    await websocket.accept()
    await websocket.send("ready")


@app.websocket("/echo/<token>")
async def echo(token: str) -> None:
    await websocket.accept()
    while True:
        await websocket.send(await websocket.receive())


write_records_to_test_log()
# Quart declares asgi_app a method; its docs assign a middleware to it all the same.
app.asgi_app = WebSocketCloseMiddleware(app.asgi_app, max_message_size=LIMIT)  # type: ignore[method-assign]
