"""The extraordinary endings, on the wire: shutdowns, accepts a server refuses, cancellation,
clients that leave early or abruptly, a broken log handler, a proxy.

Each test runs real servers (``tests/servers.py``) and asserts what the client received, the
one record of each connection, and the one ``on_close`` call. Where a server makes the truth
unknowable, the expectation below says so and ``docs/servers.md`` explains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import struct
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.harness import raise_fd_limit
from bench.rawws import RawClient, blocking_handshake, client_frame
from tests.conftest import talk
from tests.servers import BARE_APP, SERVERS, RunningServer, run_server

UVICORN = ["uvicorn-websockets", "uvicorn-websockets-sansio", "uvicorn-wsproto"]


class Hooks:
    """The ``on_close`` calls the wire app wrote, one JSON line each."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def codes_for(self, token: str) -> list[int | None]:
        """The codes the plain hook was given, once the ``async`` hook was given the same."""
        if not self.path.exists():
            return []
        calls = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        given = {
            hook: [call["code"] for call in calls if token in call["path"] and call["hook"] == hook]
            for hook in ("plain", "async")
        }
        assert sorted(given["async"], key=str) == sorted(given["plain"], key=str), given
        return given["plain"]


@pytest.fixture
def hooks(tmp_path: Path) -> Hooks:
    return Hooks(tmp_path / "hooks.jsonl")


def start(kind: str, tmp_path: Path, hooks: Hooks, **env: str) -> Any:
    return run_server(kind, tmp_path, env={"CLOSEGUARD_TEST_HOOKS": str(hooks.path), **env})


def records(server: RunningServer, token: str) -> list[dict[str, Any]]:
    return [line for line in server.log_lines() if token in (line.get("path") or "")]


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def reset(sock: socket.socket) -> None:
    """Drop the connection with a TCP reset: no Close frame, no FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def terminate(server: RunningServer, timeout: float = 20.0) -> None:
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=timeout)


def wait_for_records(server: RunningServer, token: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(records(server, token)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


# 1. Shutdown while closeguard's own close waits in the server's send ----------------------


@pytest.mark.parametrize("then", ["return", "raise"])
@pytest.mark.parametrize("kind", UVICORN)
def test_shutdown_while_closeguards_close_waits(
    kind: str, then: str, tmp_path: Path, hooks: Hooks
) -> None:
    """The app flooded a client that does not read, then returned (1000 due) or raised (1011
    due); at the graceful timeout uvicorn cancels the task inside that close."""
    token = uuid.uuid4().hex[:12]
    with start(kind, tmp_path, hooks, UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN="1") as server:
        sockets = [
            blocking_handshake(port_of(server), f"/flood/{then}/{token}-{i}") for i in range(2)
        ]
        time.sleep(1.0)  # the 8 MiB are written; the sends wait for a reader
        terminate(server)
        found = records(server, token)
        for sock in sockets:
            sock.close()
    assert len(found) == 2, found
    assert sorted(line["path"] for line in found) == [f"/flood/{then}/{token}-{i}" for i in (0, 1)]
    # The legacy implementation waits for the socket inside the app's own 8 MiB send, so its
    # app never gets to raise; the others take the data at once and wait on the close.
    raised = then == "raise" and kind != "uvicorn-websockets"
    for line in found:
        assert (line["accepted"], line["code"], line["initiator"]) == (True, None, "server")
        assert line["exception"] == ("RuntimeError" if raised else None)
        assert line["level"] == ("ERROR" if raised else "INFO")
    assert hooks.codes_for(token) == [None, None]


# 7 and 8. Shutdown with idle connections, under every server ------------------------------

#: What each server does to idle connections at SIGTERM: the close the client receives (None:
#: no Close frame), and the record's code and initiator.
SHUTDOWN: dict[str, tuple[int | str | None, int | None, str]] = {
    "uvicorn-websockets": (1012, 1012, "server"),
    "uvicorn-websockets-sansio": (1012, 1012, "server"),
    "uvicorn-wsproto": (1012, 1012, "server"),
    # hypercorn cancels the app's task after its graceful timeout (and would send 1011 then):
    # closeguard sends 1012 first, a code clients retry.
    "hypercorn": (1012, 1012, "server"),
    # daphne stops at once: no Close frame; the records are written as the process exits.
    "daphne": (None, None, "server"),
    # granian drops the connections and tells the app 1005, as for a client that left; when its
    # worker exits before a connection's task runs, that record is written at the exit.
    "granian": (None, 1005, "client"),
}

#: hypercorn 0.18 on Python 3.13 leaves open WebSockets open at SIGTERM (on 3.11 it cancels
#: the app after its graceful timeout and sends 1011): the process waits for the clients to leave.
HYPERCORN_KEEPS_OPEN = sys.version_info >= (3, 13)
if HYPERCORN_KEEPS_OPEN:
    # Nothing reaches the clients; once they leave, hypercorn tells the app 1006, as for any close.
    SHUTDOWN["hypercorn"] = ("still open", 1006, "client")

#: A second truthful record where a server races its own exit: (code, initiator).
SHUTDOWN_RACE: dict[str, tuple[int | None, str]] = {"granian": (None, "server")}


async def idle_clients(url: str, count: int) -> list[ClientConnection]:
    return [await connect(f"{url}-{i}", open_timeout=5) for i in range(count)]


async def close_received(client: ClientConnection, timeout: float) -> int | str | None:
    """The code of the Close frame the client got, None for none, or "still open"."""
    try:
        await asyncio.wait_for(client.recv(), timeout)
    except ConnectionClosed as closed:
        return None if closed.rcvd is None else closed.rcvd.code
    except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
        return "still open"
    raise AssertionError("the server sent a message to an idle client")


@pytest.mark.parametrize("kind", sorted(SERVERS))
async def test_shutdown_with_idle_connections(kind: str, tmp_path: Path, hooks: Hooks) -> None:
    token = uuid.uuid4().hex[:12]
    wire, code, initiator = SHUTDOWN[kind]
    # Past every server's graceful timeout (hypercorn's is 3 s): "still open" waits this long.
    timeout = 6.0 if wire == "still open" else 15.0
    with start(kind, tmp_path, hooks) as server:
        clients = await idle_clients(f"{server.url}/echo/{token}", 5)
        try:
            await asyncio.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            received = await asyncio.gather(*(close_received(c, timeout) for c in clients))
        finally:
            for client in clients:
                await client.close()
        await asyncio.to_thread(server.process.wait, 20)
        found = records(server, token)
    assert received == [wire] * 5
    assert sorted(line["path"] for line in found) == [f"/echo/{token}-{i}" for i in range(5)]
    allowed = {(code, initiator), SHUTDOWN_RACE.get(kind, (code, initiator))}
    for line in found:
        assert (line["code"], line["initiator"]) in allowed, line
        assert (line["level"], line["exception"]) == ("INFO", None), line
    assert sorted(hooks.codes_for(token), key=str) == sorted(
        [line["code"] for line in found], key=str
    )


#: Idle connections open at the SIGTERM of the test below: a deploy with many clients.
MANY = 1000


@pytest.mark.parametrize("kind", UVICORN)
async def test_shutdown_with_a_thousand_idle_connections(
    kind: str, tmp_path: Path, hooks: Hooks
) -> None:
    """Every client is told 1012, and the log holds exactly one record per connection, each
    with 1012: none lost to the shutdown's race with the exit, none written twice."""
    assert raise_fd_limit() >= MANY + 200, "ulimit -Hn is too low for this test"
    token = uuid.uuid4().hex[:12]
    handshakes = asyncio.Semaphore(100)  # in flight at once; all MANY stay open together

    async def open_one(port: int, index: int) -> RawClient:
        async with handshakes:
            return await RawClient.connect(port, f"/echo/{token}-{index}", timeout=30)

    with start(kind, tmp_path, hooks) as server:
        opening = (open_one(port_of(server), i) for i in range(MANY))
        clients = await asyncio.wait_for(asyncio.gather(*opening), 120)
        try:
            assert all(client.opened for client in clients)
            server.process.send_signal(signal.SIGTERM)
            ends = (client.read_to_end(60) for client in clients)
            wires = await asyncio.wait_for(asyncio.gather(*ends), 90)
        finally:
            for client in clients:
                client.abort()
        await asyncio.to_thread(server.process.wait, 60)
        found = records(server, token)
    assert Counter(wire.close[0] if wire.close else None for wire in wires) == {1012: MANY}
    assert sorted(line["path"] for line in found) == sorted(
        f"/echo/{token}-{i}" for i in range(MANY)
    )
    assert Counter((line["code"], line["initiator"]) for line in found) == {(1012, "server"): MANY}
    assert hooks.codes_for(token) == [1012] * MANY


# 2. An accept the server refuses ------------------------------------------------------------


async def outcome(url: str) -> str:
    """What the client saw, in words: an HTTP status, a close, or the client's own error."""
    try:
        seen = await talk(url, timeout=3)
    except Exception as error:  # a response the client cannot even parse
        return type(error).__name__
    if seen.status is not None:
        return f"HTTP {seen.status}"
    return f"close {seen.close} after {list(seen.messages)}"


@pytest.mark.parametrize("bad", ["crlf", "str"])
@pytest.mark.parametrize("kind", [*UVICORN, "hypercorn"])
async def test_an_accept_the_server_refuses(
    kind: str, bad: str, tmp_path: Path, hooks: Hooks
) -> None:
    """A header no server may send: the client gets what the server gives without closeguard,
    and the record never says a close code was refused."""
    token = uuid.uuid4().hex[:12]
    path = f"/bad-accept/{bad}/{token}"
    with run_server(kind, tmp_path, app=BARE_APP) as bare:
        without = await outcome(bare.url + path)
    with start(kind, tmp_path, hooks) as server:
        with_closeguard = await outcome(server.url + path)
        await asyncio.to_thread(wait_for_records, server, token, 1)
        await asyncio.sleep(0.3)
        found = records(server, token)
    assert with_closeguard == without
    assert len(found) == 1, found
    (line,) = found
    assert "refused" not in (line["violation"] or "")
    if line["accepted"] is False:  # the server raised from the accept
        assert (line["code"], line["level"]) == (None, "ERROR")
        assert line["exception"] is not None
    assert hooks.codes_for(token) == [line["code"]]


# 3. A client's close reaching an endpoint that only sends -----------------------------------


@pytest.mark.parametrize("kind", UVICORN)
async def test_a_clients_close_to_an_endpoint_that_only_sends(
    kind: str, tmp_path: Path, hooks: Hooks
) -> None:
    token = uuid.uuid4().hex[:12]
    with start(kind, tmp_path, hooks) as server:
        async with connect(f"{server.url}/ticker/{token}") as client:
            assert await client.recv() == "tick"
            await client.close(1000, "done")
        await asyncio.to_thread(wait_for_records, server, token, 1)
        await asyncio.sleep(0.3)
        found = records(server, token)
        output = server.output()
    assert len(found) == 1, found
    (line,) = found
    assert (line["code"], line["reason"], line["initiator"]) == (1000, "done", "client")
    assert (line["level"], line["exception"]) == ("INFO", None)
    assert "Traceback" not in output
    assert hooks.codes_for(token) == [1000]


#: Abrupt drops per server: enough to have hit the old race hundreds of times in 4,000.
DROPS = 300


@pytest.mark.parametrize("kind", UVICORN)
def test_abrupt_drops_of_an_endpoint_that_only_sends(
    kind: str, tmp_path: Path, hooks: Hooks
) -> None:
    token = uuid.uuid4().hex[:12]
    with start(kind, tmp_path, hooks) as server:
        for i in range(DROPS):
            sock = blocking_handshake(port_of(server), f"/ticker/{token}-{i}")
            sock.recv(256)  # the handshake's answer and maybe a tick: the app is sending
            reset(sock)
        wait_for_records(server, token, DROPS, timeout=30)
        found = records(server, token)
    assert len(found) == DROPS
    assert len({line["path"] for line in found}) == DROPS
    for line in found:
        assert line["initiator"] == "client", line
        assert line["code"] in (1005, 1006), line  # what the server reports for a lost TCP
        assert (line["level"], line["exception"]) == ("INFO", None), line


# 4. A client that leaves before a slow accept -----------------------------------------------


@pytest.mark.parametrize("kind", ["uvicorn-websockets-sansio", "uvicorn-wsproto"])
def test_a_client_that_leaves_before_a_slow_accept(kind: str, tmp_path: Path, hooks: Hooks) -> None:
    """These servers raise from the late accept: the connection never opened."""
    token = uuid.uuid4().hex[:12]
    with start(kind, tmp_path, hooks) as server:
        sock = blocking_handshake(port_of(server), f"/slow-accept/{token}?delay=0.8")
        time.sleep(0.2)
        sock.close()
        wait_for_records(server, token, 1)
        time.sleep(0.3)
        found = records(server, token)
    assert len(found) == 1, found
    (line,) = found
    assert (line["accepted"], line["code"], line["initiator"]) == (False, None, "client")
    assert hooks.codes_for(token) == [None]


# 5. A log handler that raises ------------------------------------------------------------------


@pytest.mark.parametrize("kind", UVICORN)
async def test_a_broken_log_handler_neither_skips_the_hook_nor_reaches_the_server(
    kind: str, tmp_path: Path, hooks: Hooks
) -> None:
    token = uuid.uuid4().hex[:12]
    with start(kind, tmp_path, hooks) as server:
        closed = await talk(f"{server.url}/broken-log/close/4000/{token}?reason=bye")
        failed = await talk(f"{server.url}/broken-log/raise/{token}")
        await asyncio.sleep(0.5)
        output = server.output()
    assert closed.close == (4000, "bye")
    assert failed.close == (1011, "internal error")
    assert hooks.codes_for(token) == [4000, 1011]
    # Only the app's own exception reaches uvicorn (reraise=True); the ordinary close does not.
    assert output.count("Exception in ASGI application") == 1
    assert output.count("closeguard: logging the close record of") == 2  # told on stderr


# 6. A client's Close in the same write as an oversized message ----------------------------------


def close_code_received(sock: socket.socket) -> int | None:
    """Read to the end; the code of the first Close frame the server sent, if any (the echo
    app sends nothing else: an oversized message is never delivered)."""
    sock.settimeout(3)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    index = data.find(b"\x88")
    return None if index < 0 else int(struct.unpack("!H", data[index + 2 : index + 4])[0])


#: What the record says when the client's Close beats closeguard's 1009 (the client always
#: receives its own code): only wsproto tells the app; the others drop the 1009 silently.
CLOSE_BEATS_1009: dict[str, tuple[int, str]] = {
    "uvicorn-wsproto": (4321, "client"),
    "uvicorn-websockets-sansio": (1009, "middleware"),
    "uvicorn-websockets": (1009, "middleware"),
    "hypercorn": (1009, "middleware"),
}


@pytest.mark.parametrize("kind", sorted(CLOSE_BEATS_1009))
def test_a_clients_close_in_the_same_write_as_an_oversized_message(
    kind: str, tmp_path: Path, hooks: Hooks
) -> None:
    token = uuid.uuid4().hex[:12]
    with start(kind, tmp_path, hooks) as server:
        sock = blocking_handshake(port_of(server), f"/echo/{token}")
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")  # open before the frames
        oversized = client_frame(0x1, b"x" * 5000)  # the wire app's limit is 4096 bytes
        sock.sendall(oversized + client_frame(0x8, struct.pack("!H", 4321) + b"bye"))
        received = close_code_received(sock)
        sock.close()
        wait_for_records(server, token, 1)
        found = records(server, token)
    assert received == 4321
    assert [(line["code"], line["initiator"]) for line in found] == [CLOSE_BEATS_1009[kind]]
    assert hooks.codes_for(token) == [CLOSE_BEATS_1009[kind][0]]


# 9. Behind a proxy -----------------------------------------------------------------------------


async def test_a_proxied_client_is_its_host_alone(tmp_path: Path, hooks: Hooks) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default and sets the port to 0."""
    token = uuid.uuid4().hex[:12]
    with start("uvicorn-websockets-sansio", tmp_path, hooks) as server:
        async with connect(
            f"{server.url}/close/1000/{token}",
            additional_headers={"X-Forwarded-For": "203.0.113.7"},
        ) as client:
            with pytest.raises(ConnectionClosed):
                await client.recv()
        await asyncio.to_thread(wait_for_records, server, token, 1)
        found = records(server, token)
    assert [line["client"] for line in found] == ["203.0.113.7"]
