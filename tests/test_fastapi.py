"""FastAPI, the largest group of users: add_middleware, a raising route, a real server."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket

from closeguard import WebSocketCloseMiddleware
from tests.conftest import Records, ServerFactory, talk


def make_app(records: Records) -> FastAPI:
    app = FastAPI()
    app.add_middleware(WebSocketCloseMiddleware, on_close=records)

    @app.websocket("/ws/fail")
    async def fail(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        raise ValueError("database password=hunter2")

    @app.websocket("/ws/items/{item_id}")
    async def item(websocket: WebSocket, item_id: int) -> None:
        await websocket.accept()
        await websocket.close(4000, f"item {item_id}")

    return app


async def test_fastapi_route_that_raises_gives_the_client_1011(
    server: ServerFactory, records: Records
) -> None:
    with server(make_app(records)) as url:
        seen = await talk(f"{url}/ws/fail")
    assert seen.messages == ("hello",)
    assert seen.close == (1011, "internal error")
    [record] = records
    assert (record.code, record.exception, record.path) == (1011, "ValueError", "/ws/fail")


async def test_fastapi_validation_before_accept_is_recorded(
    server: ServerFactory, records: Records
) -> None:
    with server(make_app(records)) as url:
        good = await talk(f"{url}/ws/items/7")
        bad = await talk(f"{url}/ws/items/not-a-number")
    assert good.close == (4000, "item 7")
    # FastAPI refuses a failed path validation before accept: HTTP 403 under uvicorn.
    assert bad.status == 403
    assert [(r.accepted, r.http_status) for r in records] == [(True, None), (False, 403)]
