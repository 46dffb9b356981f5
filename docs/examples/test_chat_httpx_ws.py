"""test_chat_httpx_ws.py: the same endings with httpx-ws, httpx's WebSocket client, over its
ASGI transport. The tests are ``async def``, run by anyio's pytest plugin (it comes with anyio,
which Starlette depends on).

Catch ``WebSocketDisconnect`` where the close arrives, inside ``aconnect_ws``: let it out of that
block and it comes wrapped in an ``ExceptionGroup`` (httpx-ws runs the session in a task group).
The transport itself swallows the app's exception, so ``reraise`` changes nothing here; the
record says what the exception was.
"""

import httpx
import pytest
from chat import create_app
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

from closeguard.testing import CloseRecords

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def records() -> CloseRecords:
    return CloseRecords()


async def close_after(text: str, records: CloseRecords) -> WebSocketDisconnect:
    """Send ``text``; return the close the client got."""
    app = create_app(on_close=records)
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


async def test_a_normal_close(records: CloseRecords) -> None:
    closed = await close_after("bye", records)
    assert (closed.code, closed.reason) == (1000, "goodbye")
    assert (records.one().initiator, records.one().exception) == ("app", None)


async def test_an_exception_after_accept_is_1011(records: CloseRecords) -> None:
    closed = await close_after("boom", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert records.one().exception == "RuntimeError"


async def test_an_invalid_close_is_rejected_with_1011(records: CloseRecords) -> None:
    closed = await close_after("reserved", records)
    assert (closed.code, closed.reason) == (1011, "internal error")
    assert records.one().requested_code == 1005


async def test_a_return_without_close_is_1000(records: CloseRecords) -> None:
    closed = await close_after("quit", records)
    assert closed.code == 1000
    assert records.one().initiator == "middleware"


async def test_an_oversized_message_is_1009(records: CloseRecords) -> None:
    closed = await close_after("x" * 1025, records)
    assert (closed.code, closed.reason) == (1009, "message exceeds the limit of 1024 bytes")
