"""The echo endpoint the Autobahn TestSuite fuzzes: ``guarded`` (closeguard in front) and ``bare``.

A raw ASGI echo, so nothing but closeguard stands between the server and the app. closeguard
keeps its default limit (1 MiB): Autobahn sections 1-7 send at most 65,536 bytes in one
message, so no case meets a 1009 that the bare app would not.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from closeguard import WebSocketCloseMiddleware


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo each message back until the peer leaves."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


guarded = WebSocketCloseMiddleware(bare)
