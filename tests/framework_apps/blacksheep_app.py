"""BlackSheep, mounted as docs/examples/blacksheep_app.py shows: the app wrapped. BlackSheep
catches a WebSocket handler's exception itself (docs/frameworks.md says what follows)."""

from __future__ import annotations

from blacksheep import Application, WebSocket, WebSocketDisconnectError

from closeguard import WebSocketCloseMiddleware
from tests.framework_apps import LIMIT, SECRET
from tests.record_log import write_records_to_test_log


async def close_with(websocket: WebSocket, code: int, token: str) -> None:
    await websocket.accept()
    reason = websocket.query.get("reason", [""])[0]
    await websocket.close(code, reason)


async def raise_after_accept(websocket: WebSocket, token: str) -> None:
    await websocket.accept()
    raise RuntimeError(SECRET)


async def return_without_close(websocket: WebSocket, token: str) -> None:
    await websocket.accept()
    await websocket.send_text("ready")


async def echo(websocket: WebSocket, token: str) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnectError:
        pass  # the client left, or closeguard closed with 1009: BlackSheep's usual loop


blacksheep_app = Application()
blacksheep_app.router.add_ws("/close/{code}/{token}", close_with)
blacksheep_app.router.add_ws("/raise/{token}", raise_after_accept)
blacksheep_app.router.add_ws("/return/{token}", return_without_close)
blacksheep_app.router.add_ws("/echo/{token}", echo)

write_records_to_test_log()
app = WebSocketCloseMiddleware(blacksheep_app, max_message_size=LIMIT)
