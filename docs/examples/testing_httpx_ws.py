"""The same endings with httpx-ws, httpx's WebSocket client, over its ASGI transport (async tests,
pytest-asyncio or anyio's pytest plugin).

Catch ``WebSocketDisconnect`` where the close arrives, inside ``aconnect_ws``: let it out of that
block and it comes wrapped in an ``ExceptionGroup`` (httpx-ws runs the session in a task group).
The transport itself swallows the app's exception, so ``reraise`` changes nothing here; the
record says what the exception was.
"""

import httpx
import pytest
from closeguard import CloseRecord
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from testing_app import create_app


async def close_after(text: str, records: list[CloseRecord]) -> WebSocketDisconnect:
    """Send ``text``; return the close the client got."""
    app = create_app(on_close=records.append)
    websocket: AsyncWebSocketSession  # aconnect_ws's type is generic in the session class
    async with (
        ASGIWebSocketTransport(app) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        aconnect_ws("/ws", client) as websocket,
    ):
        await websocket.send_text(text)
        with pytest.raises(WebSocketDisconnect) as ended:
            await websocket.receive_text()
    return ended.value


async def test_a_normal_close() -> None:
    closed = await close_after("bye", [])
    assert (closed.code, closed.reason) == (1000, "goodbye")


async def test_an_exception_after_accept_is_1011() -> None:
    records: list[CloseRecord] = []
    closed = await close_after("boom", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert records[0].exception == "RuntimeError"


async def test_an_invalid_close_is_rejected_with_1011() -> None:
    records: list[CloseRecord] = []
    closed = await close_after("reserved", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert records[0].requested_code == 1005


async def test_a_return_without_close_is_1000() -> None:
    closed = await close_after("quit", [])
    assert closed.code == 1000


async def test_an_oversized_message_is_1009() -> None:
    closed = await close_after("x" * 1025, [])
    assert (closed.code, closed.reason) == (1009, "message exceeds the limit of 1024 bytes")
