"""The WebSocket endpoints the explorer page runs: each ends a connection one particular way.

They are written the way application code is, without a thought for close semantics;
closeguard (mounted around them in :mod:`app.service`) is what makes each end right.
"""

from __future__ import annotations

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from closeguard import CloseCode

__all__ = ["ROUTES"]


async def echo(websocket: WebSocket) -> None:
    """Send back every text and binary message until the client leaves.

    A message over the size limit never arrives: closeguard closes with 1009 and hands this
    loop a disconnect instead.
    """
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await websocket.send_text(text)
        else:
            await websocket.send_bytes(message.get("bytes") or b"")


async def close_with_code(websocket: WebSocket) -> None:
    """Accept, then close with the ``code`` and ``reason`` from the query string, as asked.

    A code nobody may send (1005, say) is refused by closeguard with an exception raised
    right here, so the connection ends as 1011 and the log says which code was asked for.
    """
    code_text = websocket.query_params.get("code", str(CloseCode.NORMAL_CLOSURE.value))
    reason = websocket.query_params.get("reason", "")
    await websocket.accept()
    try:
        code = int(code_text)
    except ValueError:
        code, reason = CloseCode.POLICY_VIOLATION, "code must be a whole number"
    await websocket.close(code, reason)


async def raise_after_accept(websocket: WebSocket) -> None:
    """Accept, then fail: closeguard sends 1011 where uvicorn alone drops the TCP connection."""
    await websocket.accept()
    raise RuntimeError("explorer: the app failed after accept (this text never reaches a client)")


async def close_before_accept(websocket: WebSocket) -> None:
    """Refuse the handshake: the server answers HTTP 403 and no close code reaches the browser."""
    await websocket.close(4001, "refused before accept")


async def return_without_close(websocket: WebSocket) -> None:
    """Accept and return: closeguard sends the 1000 the app forgot."""
    await websocket.accept()


ROUTES = [
    WebSocketRoute("/ws/echo", echo),
    WebSocketRoute("/ws/close", close_with_code),
    WebSocketRoute("/ws/raise", raise_after_accept),
    WebSocketRoute("/ws/refuse", close_before_accept),
    WebSocketRoute("/ws/return", return_without_close),
]
