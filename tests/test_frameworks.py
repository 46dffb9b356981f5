"""Litestar, Quart, Django Channels (async and sync consumers) and BlackSheep, each with
closeguard mounted as docs/frameworks.md shows, under uvicorn: what the client receives and
the one record of each connection.

Each app (``tests/framework_apps/``) runs in its own uvicorn process on 127.0.0.1 with
uvicorn's defaults, lifespan ``auto`` among them, as a plain ``uvicorn module:app`` has it
(a Channels app answers no lifespan events). Where a framework makes a promise impossible,
the tables below say so, and so does docs/frameworks.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.harness import ROOT, free_port, running
from closeguard import InvalidCloseCode
from tests.conftest import Seen, talk
from tests.framework_apps import IDLE_TIMEOUT, LIMIT, QUART_PROPAGATES, SECRET
from tests.servers import RunningServer, TokenConnection

#: Each framework's app ("module:attribute") and the prefix of its routes.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "blacksheep": ("tests.framework_apps.blacksheep_app:app", ""),
    "channels": ("tests.framework_apps.channels_app:application", ""),
    "channels-sync": ("tests.framework_apps.channels_app:application", "/sync"),
    "litestar": ("tests.framework_apps.litestar_app:app", ""),
    "quart": ("tests.framework_apps.quart_app:app", ""),
}

#: Frameworks that catch a handler's exception and close by themselves, with no setting or
#: hook that lets it reach closeguard. BlackSheep logs it and sends 1011 with the exception's
#: text as the reason, which closeguard withholds from the wire (the record keeps it); Quart
#: 0.20 (Python 3.10) sends 1000 and logs nothing.
SWALLOWS_EXCEPTIONS = frozenset({"blacksheep"} | (set() if QUART_PROPAGATES else {"quart"}))


#: Who closes a connection whose handler returned without closing, where not closeguard:
#: Quart sends 1000 itself.
RETURN_CLOSED_BY: dict[str, str] = {"quart": "app"}

#: A handshake to a path with no route, in each framework's own words: Litestar and BlackSheep
#: close before accept (403), Quart answers 404, Channels' URLRouter raises ValueError (500).
NO_ROUTE_STATUS: dict[str, int] = {
    "blacksheep": 403,
    "channels": 500,
    "channels-sync": 500,
    "litestar": 403,
    "quart": 404,
}

GENERIC_1011 = (1011, "internal error")
#: The record's name for closeguard's error, as its module names it.
INVALID_CLOSE_CODE = f"{InvalidCloseCode.__module__}.InvalidCloseCode"
TOO_BIG = (1009, f"message exceeds the limit of {LIMIT} bytes")


class Connection(TokenConnection):
    """A test connection to one framework's app."""

    @property
    def framework(self) -> str:
        return self.server.kind


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def framework(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    """A framework's app under uvicorn, and the prefix of its routes."""
    name = str(request.param)
    with serve_framework(name, tmp_path_factory.mktemp(name)) as served:
        yield served


@contextmanager
def serve_framework(name: str, workdir: Path) -> Iterator[tuple[RunningServer, str]]:
    app, prefix = FRAMEWORKS[name]
    port = free_port()
    log_path, output_path = workdir / "closeguard.jsonl", workdir / "output.log"
    command = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--ws", "websockets-sansio", "--log-level", "info",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLOSEGUARD_")}
    env.update(CLOSEGUARD_TEST_LOG=str(log_path), PYTHONPATH=str(ROOT))
    with running(command, port, output=output_path, env=env, what=f"uvicorn with {name}") as proc:
        yield RunningServer(name, f"ws://127.0.0.1:{port}", log_path, output_path, proc), prefix


@pytest.fixture
def conn(framework: tuple[RunningServer, str]) -> Connection:
    return Connection(*framework)


# The app's own closes ---------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (4001, "bye")])
async def test_a_close_reaches_the_client_with_its_reason(
    conn: Connection, code: int, reason: str
) -> None:
    seen = await talk(conn.url(f"/close/{code}", reason=reason))
    assert seen.close == (code, reason)
    record = conn.record()
    assert (record["code"], record["reason"], record["initiator"]) == (code, reason, "app")
    assert (record["level"], record["exception"], record["requested_code"]) == ("INFO", None, None)


async def test_an_invalid_close_code_becomes_1011(conn: Connection) -> None:
    """1005 may not be sent: closeguard raises InvalidCloseCode into the app (``invalid_close``
    is "raise"), and the app ends with that exception, so the client gets 1011."""
    seen = await talk(conn.url("/close/1005", reason="bye"))
    record = conn.record()
    assert record["requested_code"] == 1005
    assert "close code 1005 is reserved for local use" in record["violation"]
    if conn.framework == "blacksheep":
        # BlackSheep catches the InvalidCloseCode and closes with 1011 and its text: closeguard
        # sends that 1011 with its own reason, and the exception is BlackSheep's to log.
        assert seen.close == GENERIC_1011
        assert (record["code"], record["initiator"], record["exception"]) == (1011, "app", None)
        assert record["level"] == "WARNING"
        assert "Exception while handling WebSocket" in conn.server_output()
        return
    if conn.framework in SWALLOWS_EXCEPTIONS:  # Quart 0.20: its own 1000
        assert seen.close == (1000, "")
        assert (record["code"], record["initiator"], record["exception"]) == (1000, "app", None)
        assert record["level"] == "WARNING"
        return
    assert seen.close == GENERIC_1011
    assert (record["code"], record["initiator"], record["level"]) == (1011, "middleware", "ERROR")
    assert record["exception"] == INVALID_CLOSE_CODE


# Exceptions ---------------------------------------------------------------------------------


async def test_an_exception_after_accept_is_1011_without_its_text(conn: Connection) -> None:
    seen = await talk(conn.url("/raise"))
    assert "hunter2" not in (seen.reason or "")
    record = conn.record()
    output = conn.server_output()
    if conn.framework == "blacksheep":
        # BlackSheep catches the exception, logs it, and closes with 1011 and ``str(exc)`` as
        # the reason: closeguard sends that 1011 with its own reason and keeps the app's in
        # the record. The exception never reaches closeguard, so the record cannot name it.
        assert seen.close == GENERIC_1011
        assert (record["code"], record["reason"], record["initiator"]) == (*GENERIC_1011, "app")
        assert (record["requested_code"], record["exception"]) == (1011, None)
        assert record["level"] == "WARNING"
        assert SECRET in record["violation"]
        assert "Exception while handling WebSocket" in output
        assert f"RuntimeError: {SECRET}" in output
        return
    if conn.framework in SWALLOWS_EXCEPTIONS:  # Quart 0.20: its traceback page, then 1000
        assert seen.close == (1000, "")
        assert (record["code"], record["initiator"], record["exception"]) == (1000, "app", None)
        assert SECRET not in output
        return
    assert seen.close == GENERIC_1011
    assert (record["code"], record["reason"], record["initiator"]) == (*GENERIC_1011, "middleware")
    assert record["exception"] == "RuntimeError"
    assert record["level"] == "ERROR"
    # closeguard re-raised it: the server logged the traceback, and nothing else did.
    assert output.count(f"RuntimeError: {SECRET}") == 1, output


# Ends the app did not say ------------------------------------------------------------------


async def test_a_return_without_close_is_1000(conn: Connection) -> None:
    seen = await talk(conn.url("/return"))
    assert seen == Seen(code=1000, reason="", messages=("ready",))
    record = conn.record()
    initiator = RETURN_CLOSED_BY.get(conn.framework, "middleware")
    assert (record["code"], record["initiator"], record["level"]) == (1000, initiator, "INFO")
    assert (record["messages_sent"], record["exception"]) == (1, None)


async def test_an_oversized_message_is_1009_naming_the_limit(conn: Connection) -> None:
    async with connect(conn.url("/echo"), open_timeout=5, close_timeout=5) as client:
        # Its echo first: Quart cancels a handler as soon as it hears of the end, so a reply
        # still due when the oversized message arrives would never be sent.
        await client.send("small")
        assert await asyncio.wait_for(client.recv(), 5) == "small"
        await client.send("x" * (LIMIT + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == TOO_BIG
    record = conn.record()
    assert (record["code"], record["reason"], record["initiator"]) == (*TOO_BIG, "middleware")
    assert (record["level"], record["exception"]) == ("WARNING", None)
    assert record["messages_received"] == 1  # the oversized one never reached the app
    assert "Traceback" not in conn.server_output()


async def test_a_clients_close_is_recorded_without_a_traceback(conn: Connection) -> None:
    seen = await talk(conn.url("/echo"), ("hi",), expect_replies=1, close=(4321, "bye"))
    assert seen == Seen(code=4321, reason="bye", messages=("hi",))
    record = conn.record()
    assert (record["code"], record["reason"], record["initiator"]) == (4321, "bye", "client")
    assert (record["level"], record["exception"]) == ("INFO", None)
    assert "Traceback" not in conn.server_output()


async def test_a_path_with_no_route_leaves_one_record(conn: Connection) -> None:
    seen = await talk(conn.url("/nowhere"))
    status = NO_ROUTE_STATUS[conn.framework]
    assert seen == Seen(status=status)
    record = conn.record()
    assert (record["accepted"], record["code"]) == (False, None)
    if status == 500:  # an exception before accept: the server's 500
        assert (record["exception"], record["level"]) == ("ValueError", "ERROR")
    else:
        assert (record["http_status"], record["level"]) == (status, "INFO")


#: One connection per way a connection can end: (route, what the client sends, its close).
ENDINGS: dict[str, tuple[str, tuple[str, ...], tuple[int, str] | None]] = {
    "the app closes": ("/close/4000", (), None),
    "the app closes with an invalid code": ("/close/1005", (), None),
    "the app raises after accept": ("/raise", (), None),
    "the app returns without a close": ("/return", (), None),
    "the client closes": ("/echo", ("hello",), (4321, "bye")),
    "the client sends too much": ("/echo", ("x" * (LIMIT + 1),), None),
    "no route": ("/nowhere", (), None),
}


async def test_every_connection_leaves_exactly_one_record(
    framework: tuple[RunningServer, str],
) -> None:
    """Connections ending every way leave one record each; and no path in the whole log (this
    module's other connections too) has two."""
    server, prefix = framework
    made = {name: Connection(server, prefix) for name in ENDINGS}
    for name, (route, messages, close) in ENDINGS.items():
        await talk(made[name].url(route), messages, close=close)
    found = server.records_by_token([conn.token for conn in made.values()])
    counts = {name: len(found[conn.token]) for name, conn in made.items()}
    assert counts == dict.fromkeys(made, 1), counts
    paths = [line["path"] for line in server.log_lines()]
    assert len(paths) == len(set(paths)), [path for path in paths if paths.count(path) > 1]


# A close policy beyond Starlette ----------------------------------------------------------


async def test_litestar_closes_an_idle_connection_by_its_route_s_policy(tmp_path: Path) -> None:
    """``idle_timeout`` set for one Litestar route through a callable: the client gets 1001
    ``idle_timeout`` once it stops speaking, the app's receive ends as for any close (no
    traceback), other routes are untouched, and there is one record each."""
    with serve_framework("litestar", tmp_path) as (server, prefix):
        idle, other = TokenConnection(server, prefix), TokenConnection(server, prefix)
        async with connect(idle.url("/idle")) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            heard = asyncio.get_running_loop().time()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            silent_for = asyncio.get_running_loop().time() - heard
        async with connect(other.url("/echo")) as ws:  # no policy here: still open after it
            await asyncio.sleep(IDLE_TIMEOUT * 2)
            await ws.send("still here")
            assert await ws.recv() == "still here"
        record, other_record = idle.record(), other.record()
        output = idle.server_output()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "idle_timeout")
    assert IDLE_TIMEOUT - 0.1 <= silent_for <= IDLE_TIMEOUT + 1.0, silent_for
    assert (record["code"], record["reason"], record["initiator"]) == (
        1001,
        "idle_timeout",
        "middleware",
    )
    assert (record["level"], record["exception"], record["messages_received"]) == ("INFO", None, 1)
    assert (other_record["code"], other_record["initiator"]) == (1000, "client")
    assert "Traceback" not in output
