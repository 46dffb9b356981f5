"""The drain under every server, on the wire: an operator touches the drain file, every open
client gets 1012 spread over the window, a client connecting meanwhile is turned away with a
refusal it retries, each connection leaves one record, and SIGTERM then finds nothing open.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from closeguard import CloseRecord, WebSocketCloseMiddleware, drain
from tests.fake_server import FakeServer, websocket_scope
from tests.servers import SERVERS, RunningServer, limited, refuses, run_server

APP = "tests.drain_app:app"
WINDOW = 2.0
#: The drain starts within a second of the file appearing (each worker looks once a second).
NOTICE = 1.0
OPEN = 12
PUSHING = 3


def wire_close(kind: str, code: int, reason: str) -> tuple[int, str]:
    """What the client receives for closeguard's ``code``: daphne sends only 1000 and
    3000-4999, so a drain's close falls back to 1000, and it never sends a reason."""
    if refuses(kind, code):
        code = 1000
    return (code, "") if limited(kind, "drops_reasons") else (code, reason)


@pytest.fixture(params=sorted(SERVERS))
def drained(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    drain_file = tmp_path / "drain-now"
    env = {
        "CLOSEGUARD_DRAIN_FILE": str(drain_file),
        "CLOSEGUARD_DRAIN_WINDOW": str(WINDOW),
        "CLOSEGUARD_TEST_APP_LOG": str(tmp_path / "app.jsonl"),
    }
    with run_server(request.param, tmp_path, env=env, app=APP) as server:
        yield server, drain_file


async def closed_at(ws: ClientConnection, started: float) -> tuple[float, int | None, str]:
    """When the client got its close frame (seconds after ``started``), and what it said."""
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    frame = ws.protocol.close_rcvd
    return (
        time.monotonic() - started,
        None if frame is None else frame.code,
        "" if frame is None else frame.reason,
    )


async def knock(url: str) -> tuple[int | None, tuple[int, str] | None, str | None]:
    """A handshake during the drain: its HTTP status and Retry-After when refused, or the
    close it got once accepted."""
    try:
        async with connect(url, open_timeout=5, close_timeout=5) as ws:
            await closed_at(ws, time.monotonic())
            frame = ws.protocol.close_rcvd
            return None, None if frame is None else (frame.code, frame.reason), None
    except InvalidStatus as refused:
        return refused.response.status_code, None, refused.response.headers.get("Retry-After")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


async def test_a_drain_closes_every_client_with_1012_spread_over_the_window(
    drained: tuple[RunningServer, Path], tmp_path: Path
) -> None:
    server, drain_file = drained
    kind = server.kind
    http = server.url.replace("ws://", "http://")
    token = uuid.uuid4().hex[:12]
    echoes = [await connect(f"{server.url}/echo/{token}-e{n:02d}") for n in range(OPEN)]
    pushes = [await connect(f"{server.url}/push/{token}-p{n:02d}") for n in range(PUSHING)]
    for n, ws in enumerate(echoes):
        await ws.send(f"hello {n}")
        assert await asyncio.wait_for(ws.recv(), 5) == f"hello {n}"
    assert http_status(f"{http}/ready") == 200

    drain_file.touch()
    started = time.monotonic()
    waiting = [asyncio.ensure_future(closed_at(ws, started)) for ws in echoes + pushes]
    await asyncio.sleep(NOTICE + 0.3)  # the drain is under way
    status, late_close, retry_after = await knock(f"{server.url}/echo/{token}-late")
    ready = await asyncio.to_thread(http_status, f"{http}/ready")
    ends = await asyncio.wait_for(asyncio.gather(*waiting), WINDOW + NOTICE + 10)

    # Every client got the drain's close, none before the file appeared nor after the window.
    assert {(code, reason) for _, code, reason in ends} == {wire_close(kind, 1012, "draining")}
    times = sorted(at for at, _, _ in ends)
    assert times[-1] <= NOTICE + WINDOW + 1.0, times
    # Spread, never a burst: each of OPEN + PUSHING slices of the window holds one close, so no
    # 100 ms holds more than two of them, give or take the wire's own jitter.
    assert times[-1] - times[0] >= WINDOW / 2, times
    assert max(sum(1 for t in times if start <= t < start + 0.1) for start in times) <= 3, times

    # A client arriving meanwhile is turned away with a refusal it retries, and the readiness
    # check fails, so the Service stops sending clients here.
    if kind == "daphne":  # no HTTP answer to a handshake: accepted, then closed
        assert (status, late_close) == (None, wire_close(kind, 1013, "draining"))
    else:
        assert (status, retry_after) == (503, "2")
    assert ready == 503

    records = server.records_by_token(
        [f"{token}-e{n:02d}" for n in range(OPEN)] + [f"{token}-late"]
    )
    for name, found in records.items():
        assert len(found) == 1, (name, found)
    drained_records = [found[0] for name, found in records.items() if not name.endswith("late")]
    code = wire_close(kind, 1012, "draining")[0]
    assert {(r["code"], r["reason"], r["initiator"]) for r in drained_records} == {
        (code, "draining", "middleware")
    }
    [late] = records[f"{token}-late"]
    if kind == "daphne":
        assert (late["accepted"], late["code"], late["reason"]) == (True, 1000, "draining")
    else:
        assert (late["accepted"], late["http_status"], late["reason"]) == (False, 503, "draining")
    assert late["initiator"] == "middleware"
    pushed = [line for line in server.log_lines() if f"{token}-p" in (line.get("path") or "")]
    assert len(pushed) == PUSHING
    assert {(r["code"], r["exception"]) for r in pushed} == {(code, None)}
    assert [line for line in server.log_lines() if line["level"] == "ERROR"] == []

    # The app read the drain's disconnect, with the code it would retry.
    app_saw = [json.loads(line) for line in (tmp_path / "app.jsonl").read_text().splitlines()]
    mine = [line for line in app_saw if token in line["path"] and "late" not in line["path"]]
    assert len(mine) == OPEN
    assert {(line["code"], line["reason"]) for line in mine} == {(1012, "draining")}

    # Then SIGTERM finds nothing open: no record more, and the process ends.
    before = len(server.log_lines())
    server.process.terminate()
    server.process.wait(timeout=15)
    assert len(server.log_lines()) == before


# In process: what looking for the drain file costs --------------------------------------


async def test_the_drain_file_is_looked_for_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A burst of handshakes costs one ``stat``, not one each; no drain starts without the
    file, and nothing else changes for the connections."""
    looked: list[str] = []
    drain_file = str(tmp_path / "drain")
    real_exists = os.path.exists

    def exists(path: str) -> bool:
        if path == drain_file:
            looked.append(path)
        return real_exists(path)

    monkeypatch.setattr(os.path, "exists", exists)
    monkeypatch.setattr(drain, "_files_checked", -math.inf)
    records: list[CloseRecord] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    guarded = WebSocketCloseMiddleware(app, drain_file=tmp_path / "drain", on_close=records.append)
    started = time.monotonic()
    for _ in range(50):
        server = FakeServer()
        await guarded(websocket_scope(), server.receive, server.send)
    assert time.monotonic() - started < drain.FILE_CHECK_INTERVAL
    assert looked == [drain_file]
    assert not drain.draining()
    assert [record.code for record in records] == [1000] * 50
