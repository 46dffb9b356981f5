"""closeguard.testing: the record-keeping hook an app's own tests mount."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from closeguard import WebSocketCloseMiddleware
from closeguard.testing import CloseRecords
from tests.conftest import serve, talk


async def hello(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close(4001, "bye")


def app_with(records: CloseRecords) -> Starlette:
    guard = Middleware(WebSocketCloseMiddleware, on_close=[records])
    return Starlette(routes=[WebSocketRoute("/ws", hello)], middleware=[guard])


def test_keeps_each_connection_s_record_as_the_hook() -> None:
    records = CloseRecords()
    with TestClient(app_with(records)) as client:
        for _ in range(2):
            with client.websocket_connect("/ws") as websocket:
                assert websocket.receive_text() == "hello"
    assert [(r.code, r.reason, r.initiator) for r in records] == [(4001, "bye", "app")] * 2
    with pytest.raises(AssertionError, match="expected exactly one close record, got 2"):
        records.one()


def test_one_is_the_only_record_and_fails_on_none() -> None:
    records = CloseRecords()
    with pytest.raises(AssertionError, match="got 0: "):
        records.one()
    with TestClient(app_with(records)) as client, client.websocket_connect("/ws") as websocket:
        websocket.receive_text()
    assert records.one().code == 4001


async def test_wait_for_a_record_a_server_thread_writes() -> None:
    records = CloseRecords()
    with serve(app_with(records), "websockets-sansio") as url:
        seen = await talk(f"{url}/ws")
        [record] = records.wait_for(1)
    assert seen.close == (4001, "bye")
    assert record.code == 4001


def test_wait_for_fails_naming_what_it_got() -> None:
    records = CloseRecords()
    with pytest.raises(AssertionError, match=r"expected 1 close record\(s\) within 0.1 s, got 0"):
        records.wait_for(1, timeout=0.1)
