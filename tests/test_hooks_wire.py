"""No record lost, no shutdown held (issue 18), under the servers where each fault was found.

The wire app's ``/hooked/{how}/`` routes run one ``async`` hook as slow as ``how`` says
(``tests/wire_app.py``, ``on_close_slow``); it writes its call once it is done. Each test ends
the server with SIGTERM, as a deploy does, and checks that every record was logged, which hooks
finished, and that the process exited within the bound: the server's own shutdown plus
closeguard's 5 s for the hooks, and a margin for a loaded machine. The last tests hold point
5's smaller truths that only a real server shows: a client's own 1012 and 1011, and what a
keepalive ping that times out leaves in the record.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.harness import free_port, raise_fd_limit, running
from bench.rawws import RawClient, blocking_handshake
from closeguard.hooks import ASYNC_HOOK_WAIT
from closeguard.unwritten import EXIT_HOOK_WAIT
from tests.app_support import BIN_DIR
from tests.processes import ROOT
from tests.servers import APP, SERVERS, RunningServer, client_close_recorded, run_server

UVICORN = ["uvicorn-websockets", "uvicorn-websockets-sansio", "uvicorn-wsproto"]

#: What a loaded machine may add to a bound: starting the shutdown, writing the log.
MARGIN = 3.0


def slow_hook_paths(path: Path, token: str) -> list[str]:
    """The paths of the connections whose slow hook finished, one per call."""
    if not path.exists():
        return []
    calls = [json.loads(line) for line in path.read_text().splitlines() if line]
    return sorted(c["path"] for c in calls if token in c["path"] and c["hook"] == "slow")


def records(server: RunningServer, token: str) -> list[dict[str, Any]]:
    return [line for line in server.log_lines() if token in (line.get("path") or "")]


def cut_off(server: RunningServer) -> list[str]:
    return [line["message"] for line in server.log_lines() if "was cut off" in line["message"]]


def terminate(process: Any, timeout: float = 60.0) -> float:
    """SIGTERM; the seconds until the process exited."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=timeout)
    return time.monotonic() - started


async def terminate_async(process: Any, timeout: float = 60.0) -> float:
    return await asyncio.to_thread(terminate, process, timeout)


async def idle_clients(url: str, count: int) -> list[ClientConnection]:
    return [await connect(f"{url}-{i}", open_timeout=5) for i in range(count)]


async def many_raw_clients(port: int, path: str, count: int) -> list[RawClient]:
    """``count`` open connections to ``{path}-{i}``, at most 100 handshakes in flight."""
    handshakes = asyncio.Semaphore(100)

    async def open_one(index: int) -> RawClient:
        async with handshakes:
            return await RawClient.connect(port, f"{path}-{index}", timeout=30)

    clients = await asyncio.wait_for(asyncio.gather(*map(open_one, range(count))), 120)
    assert all(client.opened for client in clients)
    return clients


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# 1. daphne: the exit writes every record and runs their hooks within one bound ----------------


async def test_daphne_exits_within_the_bound_though_a_hook_hangs(tmp_path: Path) -> None:
    """daphne leaves its app tasks unended at SIGTERM: the exit writes the records."""
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    with run_server("daphne", tmp_path, env={"CLOSEGUARD_TEST_HOOKS": str(hooks)}) as server:
        clients = [
            await connect(f"{server.url}/hooked/{how}/echo/{token}-{i}", open_timeout=5)
            for i, how in enumerate(["hang", "sleep-0.1", "sleep-0.1"])
        ]
        await asyncio.sleep(0.3)
        took = await terminate_async(server.process)
        for client in clients:
            await client.close()
        found = records(server, token)
        cut = cut_off(server)
        output = server.output()
    assert took < EXIT_HOOK_WAIT + MARGIN
    # The hook cut off is one log line, without a traceback nor a word from asyncio after it.
    assert "Traceback" not in output
    assert "destroyed but it is pending" not in output
    assert sorted(line["path"] for line in found) == [
        f"/hooked/{how}/echo/{token}-{i}"
        for i, how in enumerate(["hang", "sleep-0.1", "sleep-0.1"])
    ]
    assert {(line["code"], line["initiator"]) for line in found} == {(None, "server")}
    assert slow_hook_paths(hooks, token) == [
        f"/hooked/sleep-0.1/echo/{token}-1",
        f"/hooked/sleep-0.1/echo/{token}-2",
    ]
    [hung] = [line for line in found if "/hang/" in line["path"]]
    assert cut == [
        f"closeguard on_close hook on_close_slow was cut off after {EXIT_HOOK_WAIT:g} s "
        f"for {hung['connection_id']}"
    ]


#: Connections open at the SIGTERM of the load tests below: a deploy with many clients.
MANY = 1000


async def test_daphne_exits_within_the_bound_with_a_thousand_records(tmp_path: Path) -> None:
    """1,000 hooks of 0.1 s each: together, not one after another (100 s)."""
    assert raise_fd_limit() >= MANY + 200, "ulimit -Hn is too low for this test"
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    with run_server("daphne", tmp_path, env={"CLOSEGUARD_TEST_HOOKS": str(hooks)}) as server:
        path = f"/hooked/sleep-0.1/echo/{token}"
        clients = await many_raw_clients(port_of(server.url), path, MANY)
        try:
            took = await terminate_async(server.process)
        finally:
            for client in clients:
                client.abort()
        found = records(server, token)
    assert took < EXIT_HOOK_WAIT + MARGIN
    expected = sorted(f"{path}-{i}" for i in range(MANY))
    assert sorted(line["path"] for line in found) == expected
    assert slow_hook_paths(hooks, token) == expected


# 2. uvicorn: hooks outlast the graceful timeout, and the exit waits for them ------------------


@pytest.mark.parametrize("kind", UVICORN)
async def test_hooks_of_connections_closed_at_shutdown_finish_before_uvicorn_exits(
    kind: str, tmp_path: Path
) -> None:
    """Idle clients get 1012; their 2 s hooks hold the tasks past the 1 s graceful timeout,
    uvicorn cancels them, and the lifespan shutdown waits for the hooks."""
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    env = {"CLOSEGUARD_TEST_HOOKS": str(hooks), "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN": "1"}
    with run_server(kind, tmp_path, env=env) as server:
        clients = await idle_clients(f"{server.url}/hooked/sleep-2/echo/{token}", 6)
        await asyncio.sleep(0.3)
        took = await terminate_async(server.process)
        for client in clients:
            await client.close()
        found = records(server, token)
    assert took < 1 + ASYNC_HOOK_WAIT + MARGIN
    expected = [f"/hooked/sleep-2/echo/{token}-{i}" for i in range(6)]
    assert sorted(line["path"] for line in found) == expected
    assert {(line["code"], line["initiator"]) for line in found} == {(1012, "server")}
    assert slow_hook_paths(hooks, token) == expected


@pytest.mark.parametrize("kind", UVICORN)
def test_hooks_of_connections_cancelled_at_the_graceful_timeout_finish(
    kind: str, tmp_path: Path
) -> None:
    """Clients that do not read leave their connections stuck until uvicorn cancels them at
    its graceful timeout; each record's 1 s hook still finishes before the process exits."""
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    env = {"CLOSEGUARD_TEST_HOOKS": str(hooks), "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN": "2"}
    with run_server(kind, tmp_path, env=env) as server:
        path = f"/hooked/sleep-1/flood/return/{token}"
        sockets = [blocking_handshake(port_of(server.url), f"{path}-{i}") for i in range(3)]
        time.sleep(1.0)  # the 8 MiB are written; the sends wait for a reader
        took = terminate(server.process)
        for sock in sockets:
            sock.close()
        found = records(server, token)
    assert took < 2 + ASYNC_HOOK_WAIT + MARGIN
    expected = [f"{path}-{i}" for i in range(3)]
    assert sorted(line["path"] for line in found) == expected
    assert slow_hook_paths(hooks, token) == expected


@pytest.mark.parametrize("how", ["hang", "thread-30"])
async def test_a_hook_that_will_not_end_holds_uvicorns_exit_only_for_the_bound(
    how: str, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    env = {"CLOSEGUARD_TEST_HOOKS": str(hooks), "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN": "1"}
    with run_server("uvicorn-websockets-sansio", tmp_path, env=env) as server:
        [client] = await idle_clients(f"{server.url}/hooked/{how}/echo/{token}", 1)
        await asyncio.sleep(0.3)
        took = await terminate_async(server.process)
        await client.close()
        found = records(server, token)
        cut = cut_off(server)
    assert took < 1 + ASYNC_HOOK_WAIT + MARGIN
    [line] = found
    assert cut == [
        f"closeguard on_close hook on_close_slow was cut off after {ASYNC_HOOK_WAIT:g} s "
        f"for {line['connection_id']}"
    ]
    assert slow_hook_paths(hooks, token) == []


# 2's other half: granian ------------------------------------------------------------------


async def test_hooks_of_connections_granian_drops_at_shutdown_finish(tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    with run_server("granian", tmp_path, env={"CLOSEGUARD_TEST_HOOKS": str(hooks)}) as server:
        clients = await idle_clients(f"{server.url}/hooked/sleep-1/echo/{token}", 6)
        await asyncio.sleep(0.3)
        took = await terminate_async(server.process)
        for client in clients:
            await client.close()
        found = records(server, token)
    assert took < ASYNC_HOOK_WAIT + MARGIN
    expected = [f"/hooked/sleep-1/echo/{token}-{i}" for i in range(6)]
    assert sorted(line["path"] for line in found) == expected
    assert slow_hook_paths(hooks, token) == expected


# Load: a thousand connections with async hooks, ended by SIGTERM ------------------------------


@contextmanager
def gunicorn(tmp_path: Path, env: dict[str, str]) -> Iterator[RunningServer]:
    """gunicorn with two uvicorn workers serving the wire app, as the deploy recipe runs it
    (the recipe's own file serves the reference service, which has no slow hooks)."""
    port = free_port()
    log_path = tmp_path / "gunicorn-closeguard.jsonl"
    output_path = tmp_path / "gunicorn-output.log"
    command = [
        f"{BIN_DIR}/gunicorn", "-k", "uvicorn_worker.UvicornWorker", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10", APP,
    ]  # fmt: skip
    environment = {
        "PATH": BIN_DIR,
        "PYTHONPATH": str(ROOT),
        "CLOSEGUARD_TEST_LOG": str(log_path),
        **env,
    }
    with running(command, port, output=output_path, env=environment, what="gunicorn") as process:
        time.sleep(1.0)  # both workers up, not only the first
        yield RunningServer("gunicorn", f"ws://127.0.0.1:{port}", log_path, output_path, process)


@pytest.mark.parametrize("kind", ["uvicorn-websockets-sansio", "gunicorn"])
async def test_a_thousand_connections_with_async_hooks_end_at_sigterm(
    kind: str, tmp_path: Path
) -> None:
    """Every client is told 1012, every record is written once, and every 1 s hook finishes
    before the process exits, within the bound."""
    assert raise_fd_limit() >= MANY + 200, "ulimit -Hn is too low for this test"
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    env = {"CLOSEGUARD_TEST_HOOKS": str(hooks)}
    serving = gunicorn(tmp_path, env) if kind == "gunicorn" else run_server(kind, tmp_path, env=env)
    path = f"/hooked/sleep-1/echo/{token}"
    with serving as server:
        clients = await many_raw_clients(port_of(server.url), path, MANY)
        try:
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            ends = (client.read_to_end(60) for client in clients)
            wires = await asyncio.wait_for(asyncio.gather(*ends), 90)
            await asyncio.to_thread(server.process.wait, 60)
            took = time.monotonic() - started
        finally:
            for client in clients:
                client.abort()
        found = records(server, token)
    assert Counter(wire.close[0] if wire.close else None for wire in wires) == {1012: MANY}
    expected = sorted(f"{path}-{i}" for i in range(MANY))
    assert sorted(line["path"] for line in found) == expected
    assert Counter((line["code"], line["initiator"]) for line in found) == {(1012, "server"): MANY}
    assert slow_hook_paths(hooks, token) == expected
    assert took < ASYNC_HOOK_WAIT + 2 * MARGIN


# 5. A client's own 1012 and 1011 -------------------------------------------------------------

#: Servers that pass no reason with a client's close, and so give a client's 1012 the look of a
#: server's restart (none of them sends 1012 itself; hypercorn reports 1006 for every close).
NO_REASON_GIVEN = {"daphne", "granian"}


@pytest.mark.parametrize("kind", sorted(SERVERS))
@pytest.mark.parametrize("reason", ["", "moving"])
async def test_a_clients_own_1012_and_1011(kind: str, reason: str, tmp_path: Path) -> None:
    """uvicorn tells the app a client's reason, an empty one too, and its own 1012 has none:
    so no client can pass for a server's restart there, and a client's 1011 is no WARNING."""
    token = uuid.uuid4().hex[:12]
    with run_server(kind, tmp_path) as server:
        for code in (1012, 1011):
            async with connect(f"{server.url}/echo/{token}-{code}") as client:
                await client.close(code, reason)
        found = server.records_by_token([f"{token}-1012", f"{token}-1011"])
    [restart] = found[f"{token}-1012"]
    [failure] = found[f"{token}-1011"]
    code, recorded_reason = client_close_recorded(kind, 1012, reason)
    initiator = "server" if kind in NO_REASON_GIVEN else "client"
    assert (restart["code"], restart["reason"], restart["initiator"]) == (
        code,
        recorded_reason,
        initiator,
    )
    code, _ = client_close_recorded(kind, 1011, reason)
    assert (failure["code"], failure["initiator"], failure["level"]) == (code, "client", "INFO")


#: What the record says of a keepalive ping that timed out (a client that stopped answering),
#: and within how many seconds: uvicorn puts 1011 "keepalive ping timeout" on the wire and tells
#: the app 1005, except under the legacy implementation, which tells it 1006 only once
#: websockets' own close timeout (10 s, which uvicorn does not expose) has passed.
PING_TIMEOUT: dict[str, tuple[int, float]] = {
    "uvicorn-websockets": (1006, 15.0),
    "uvicorn-websockets-sansio": (1005, 5.0),
    "uvicorn-wsproto": (1005, 5.0),
}


@pytest.mark.parametrize("kind", UVICORN)
def test_a_keepalive_ping_that_times_out(kind: str, tmp_path: Path) -> None:
    code, within = PING_TIMEOUT[kind]
    token = uuid.uuid4().hex[:12]
    env = {"UVICORN_WS_PING_INTERVAL": "0.5", "UVICORN_WS_PING_TIMEOUT": "0.5"}
    with run_server(kind, tmp_path, env=env) as server:
        sock = blocking_handshake(port_of(server.url), f"/echo/{token}")  # never reads again
        found = server.records_for(token, timeout=within)
        sock.close()
    assert [(line["code"], line["initiator"], line["level"]) for line in found] == [
        (code, "client", "INFO")
    ]


def test_a_shutdown_within_the_legacy_close_timeout_reports_1012(tmp_path: Path) -> None:
    """The limit the table in docs/servers.md names: a SIGTERM before websockets' close
    timeout has passed finds the connection still open, and uvicorn tells the app 1012."""
    token = uuid.uuid4().hex[:12]
    env = {"UVICORN_WS_PING_INTERVAL": "0.5", "UVICORN_WS_PING_TIMEOUT": "0.5"}
    with run_server("uvicorn-websockets", tmp_path, env=env) as server:
        sock = blocking_handshake(port_of(server.url), f"/echo/{token}")
        time.sleep(2.0)  # the ping has timed out; websockets waits out its close timeout
        assert records(server, token) == []
        terminate(server.process)
        sock.close()
        found = records(server, token)
    assert [(line["code"], line["initiator"]) for line in found] == [(1012, "server")]


@pytest.mark.parametrize(
    "kind",
    [
        # The legacy implementation takes closeguard's teardown 1012 after its own without a
        # word: the record is right because both carry no reason.
        "uvicorn-websockets",
        "uvicorn-websockets-sansio",
        "uvicorn-wsproto",
    ],
)
async def test_a_connection_cancelled_at_the_graceful_timeout_records_what_the_client_got(
    kind: str, tmp_path: Path
) -> None:
    """The app works on without reading: uvicorn's shutdown sends 1012 to the client and
    queues it for the app, which never reads it; at the graceful timeout uvicorn cancels it."""
    token = uuid.uuid4().hex[:12]
    env = {"UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN": "1"}
    with run_server(kind, tmp_path, env=env) as server:
        async with connect(f"{server.url}/busy/{token}") as client:
            await asyncio.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(client.recv(), 10)
        await asyncio.to_thread(server.process.wait, 20)
        found = records(server, token)
    received = closed.value.rcvd
    assert received is not None
    [line] = found
    assert (line["code"], line["reason"], line["initiator"]) == (
        received.code,
        received.reason,
        "server",
    )


# 3 and 4. A hook that hangs, or raises CancelledError, under uvicorn --------------------------


def hook_paths(path: Path, token: str, hook: str) -> list[str]:
    if not path.exists():
        return []
    calls = [json.loads(line) for line in path.read_text().splitlines() if line]
    return sorted(c["path"] for c in calls if token in c["path"] and c["hook"] == hook)


@pytest.mark.parametrize("how", ["hang", "thread-30", "cancelled"])
async def test_a_hook_that_hangs_or_raises_cancelled_costs_no_other_hook(
    how: str, tmp_path: Path
) -> None:
    """The other async hook of the record finishes at once, not after the first one's 5 s, and
    nothing reaches uvicorn: no "Exception in ASGI application" for a client's clean close."""
    token = uuid.uuid4().hex[:12]
    hooks = tmp_path / "hooks.jsonl"
    with run_server(
        "uvicorn-websockets-sansio", tmp_path, env={"CLOSEGUARD_TEST_HOOKS": str(hooks)}
    ) as server:
        path = f"/hooked/{how}/echo/{token}"
        async with connect(f"{server.url}{path}") as client:
            await client.close(1000, "bye")
        [line] = server.records_for(token)
        other = hook_paths(hooks, token, "async")
        await asyncio.sleep(ASYNC_HOOK_WAIT + 0.5)  # the hook's bound, and its log line
        cut = cut_off(server)
        output = server.output()
    assert (line["code"], line["initiator"], line["level"]) == (1000, "client", "INFO")
    assert other == [path]  # within the record's 0.2 s wait, not after the other's 5 s
    assert "Exception in ASGI application" not in output
    assert "Traceback" not in output
    if how == "cancelled":
        assert cut == []
    else:
        assert cut == [
            f"closeguard on_close hook on_close_slow was cut off after {ASYNC_HOOK_WAIT:g} s "
            f"for {line['connection_id']}"
        ]
