"""deploy/gunicorn.conf.py, run as an operator runs it: gunicorn, two uvicorn workers, the service.

Each test starts ``gunicorn -c deploy/gunicorn.conf.py app.main:app`` on 127.0.0.1 at a free
port (``--bind`` added to the file's settings; a test that compares adds one more) and talks to
it with the ``websockets`` client: what the clients receive, the JSON lines on stdout, and
``/metrics``. Which worker holds a connection is read from ``/proc`` (Linux), so that a test can
be sure both workers serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.harness import ROOT, free_port
from bench.rawws import blocking_handshake, client_frame
from tests.app_support import BIN_DIR, AppProcess, app_env, errors, http_get, run_app
from tests.conftest import talk

CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
#: closeguard's default limit, which the service keeps unless CLOSEGUARD_MAX_MESSAGE_SIZE says.
DEFAULT_LIMIT = 1_048_576
#: uvicorn's own frame limit, which gunicorn cannot change without the service's worker class.
UVICORN_LIMIT = 16 * 1024 * 1024


def command(port: int, *options: str) -> list[str]:
    return [
        os.path.join(BIN_DIR, "gunicorn"), "-c", str(CONFIG),
        "--bind", f"127.0.0.1:{port}", *options, "app.main:app",
    ]  # fmt: skip


def worker_pids(master: int) -> set[int]:
    """The live child processes of gunicorn's master."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
        state, ppid = text.rpartition(")")[2].split()[:2]
        if int(ppid) == master and state != "Z":
            pids.add(int(stat.parent.name))
    return pids


def started_workers(service: AppProcess) -> int:
    return sum(
        line.get("message") == "Application startup complete." for line in service.log_lines()
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


async def until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    """:func:`wait_for` for a test with clients open: their connections keep being served."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.05)


@contextmanager
def gunicorn(tmp_path: Path, *options: str, workers: int = 2, **env: str) -> Iterator[AppProcess]:
    """gunicorn with the shipped config, every worker serving; SIGTERM and wait at the end."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    port = free_port()
    environment = app_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **env)
    with run_app(command(port, *options), port, tmp_path / "gunicorn.log", environment) as service:
        wait_for(lambda: started_workers(service) >= workers, what="the workers starting")
        wait_for(lambda: len(worker_pids(service.process.pid)) == workers, what="live workers")
        yield service


def holder(pids: set[int], server_port: int, client: ClientConnection) -> int:
    """The worker process whose socket is the server side of ``client``'s connection."""
    client_port = client.local_address[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if local.endswith(f":{server_port:04X}") and remote.endswith(f":{client_port:04X}"):
            inode = fields[9]
    assert inode is not None, f"no server socket for client port {client_port}"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker of {pids} holds socket {inode}")


async def spread_over_workers(
    stack: AsyncExitStack, service: AppProcess, pids: set[int], each: int = 2
) -> dict[int, list[ClientConnection]]:
    """Echo connections, opened until every worker holds at least ``each`` (at most 20 times
    ``each`` in all)."""
    held: dict[int, list[ClientConnection]] = {pid: [] for pid in pids}
    for _ in range(10 * each):
        batch = [connect(f"{service.ws}/ws/echo", ping_interval=None) for _ in range(2)]
        for client in await asyncio.gather(*map(stack.enter_async_context, batch)):
            await client.send("hello")
            assert await asyncio.wait_for(client.recv(), 10) == "hello"
            held[holder(pids, service.port, client)].append(client)
        if all(len(clients) >= each for clients in held.values()):
            return held
    raise AssertionError(f"{20 * each} connections did not reach both workers: {held}")


def metric_lines(service: AppProcess) -> list[str]:
    status, _, body = http_get(f"{service.http}/metrics", timeout=10)
    assert status == 200
    return body.splitlines()


async def closed_with(client: ClientConnection, timeout: float = 15.0) -> tuple[int, str] | None:
    """The Close frame an idle client receives (None: the connection ended without one)."""
    try:
        message = await asyncio.wait_for(client.recv(), timeout)
    except ConnectionClosed as closed:
        return None if closed.rcvd is None else (closed.rcvd.code, closed.rcvd.reason)
    raise AssertionError(f"an idle client received a message: {message!r}")


async def test_closes_on_the_wire_and_one_json_record_each(tmp_path: Path) -> None:
    with gunicorn(tmp_path) as service:
        assert (await talk(f"{service.ws}/ws/raise")).close == (1011, "internal error")
        oversized = await talk(f"{service.ws}/ws/echo", ("x" * (DEFAULT_LIMIT + 1),))
        assert oversized.close == (1009, f"message exceeds the limit of {DEFAULT_LIMIT} bytes")
        assert (await talk(f"{service.ws}/ws/return")).close == (1000, "")
        assert (await talk(f"{service.ws}/ws/close?code=4000&reason=bye")).close == (4000, "bye")
        await until(lambda: len(service.close_records("/ws/close")) == 1, what="the last record")

        ended = {
            path: service.close_records(path) for path in ("/ws/raise", "/ws/echo", "/ws/return")
        }
        everything = service.log_lines()

    assert [(r["code"], r["initiator"], r["level"]) for r in ended["/ws/raise"]] == [
        (1011, "middleware", "ERROR")
    ]
    assert ended["/ws/raise"][0]["exception"] == "RuntimeError"
    assert [(r["code"], r["reason"]) for r in ended["/ws/echo"]] == [
        (1009, f"message exceeds the limit of {DEFAULT_LIMIT} bytes")
    ]
    assert [(r["code"], r["initiator"]) for r in ended["/ws/return"]] == [(1000, "middleware")]
    # One format for the whole output: gunicorn's master, uvicorn, closeguard.
    loggers = {line["logger"] for line in everything}
    assert {"gunicorn.error", "uvicorn.error", "closeguard"} <= loggers
    assert any("Booting worker" in line["message"] for line in everything)


RAISED_THREE_TIMES = (
    'closeguard_websocket_closes_total{code="1011",initiator="middleware",policy="none"} 3.0'
)


def dead(pid: int) -> bool:
    """Gone, or a zombie: a process killed and not yet reaped by its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


async def test_metrics_merge_both_workers_and_a_killed_workers_gauge_goes(tmp_path: Path) -> None:
    with gunicorn(tmp_path) as service:
        pids = worker_pids(service.process.pid)
        for _ in range(3):
            assert (await talk(f"{service.ws}/ws/raise")).close == (1011, "internal error")
        async with AsyncExitStack() as stack:
            held = await spread_over_workers(stack, service, pids)
            total = sum(map(len, held.values()))
            # Every scrape, whichever worker answers it, counts every worker's connections.
            for _ in range(6):
                text = metric_lines(service)
                assert f"closeguard_websocket_open_connections {total}.0" in text
                assert RAISED_THREE_TIMES in text

            victim, survivor = sorted(held, key=lambda pid: len(held[pid]))
            os.kill(victim, signal.SIGKILL)
            ends = await asyncio.gather(*(closed_with(client) for client in held[victim]))
            assert ends == [None] * len(held[victim])  # no Close frame: the browser's 1006
            for client in held[survivor]:
                await client.send("still here")
                assert await asyncio.wait_for(client.recv(), 10) == "still here"

            # Once the worker is dead (reaped by gunicorn, or still a zombie, which exists), the
            # next scrape forgets its connections and keeps its counters.
            await until(lambda: dead(victim), what="the worker's death")
            text = metric_lines(service)
            assert f"closeguard_websocket_open_connections {len(held[survivor])}.0" in text
            assert RAISED_THREE_TIMES in text
            # gunicorn replaces the worker; the survivors are still counted after that.
            await until(lambda: len(worker_pids(service.process.pid) - {victim}) == 2)
            await until(lambda: started_workers(service) >= 3, what="the replacement worker")
            text = metric_lines(service)
            assert f"closeguard_websocket_open_connections {len(held[survivor])}.0" in text


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
async def test_reload_and_stop_give_every_open_connection_1012_and_one_record(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with gunicorn(tmp_path) as service:
        pids = worker_pids(service.process.pid)
        async with AsyncExitStack() as stack:
            held = await spread_over_workers(stack, service, pids)
            clients = [client for group in held.values() for client in group]
            service.process.send_signal(signum)
            ends = await asyncio.gather(*(closed_with(client) for client in clients))
        assert ends == [(1012, "")] * len(clients)
        if signum == signal.SIGTERM:
            assert service.process.wait(timeout=20) == 0
        else:
            # A reload: new workers serve, the master goes on.
            await until(lambda: started_workers(service) >= 4, what="two new workers")
            await until(lambda: len(worker_pids(service.process.pid) - pids) == 2)
            assert (await talk(f"{service.ws}/ws/close?code=4000&reason=again")).close == (
                4000,
                "again",
            )
        await until(lambda: len(service.close_records("/ws/echo")) >= len(clients), what="records")
        await asyncio.sleep(0.3)  # a second record per connection would show by now
        found = service.close_records("/ws/echo")
    assert len(found) == len(clients)
    assert len({record["connection_id"] for record in found}) == len(clients)
    assert {(r["code"], r["initiator"], r["level"]) for r in found} == {(1012, "server", "INFO")}


#: closeguard's limit above uvicorn's 16 MiB default, as a service taking large uploads sets it.
LARGE_LIMIT = 20 * 1024 * 1024


@pytest.mark.parametrize(
    ("worker", "expected"),
    [
        # The shipped worker class raises uvicorn's limit: closeguard's 1009 is the one sent.
        (None, (1009, f"message exceeds the limit of {LARGE_LIMIT} bytes")),
        # uvicorn-worker's own class keeps 16 MiB: uvicorn closes first, with its own reason.
        ("uvicorn_worker.UvicornWorker", (1009, f"frame exceeds limit of {UVICORN_LIMIT} bytes")),
    ],
    ids=["shipped-worker", "stock-worker"],
)
async def test_a_limit_above_16_mib_is_closeguards(
    tmp_path: Path, worker: str | None, expected: tuple[int, str]
) -> None:
    options = () if worker is None else ("--worker-class", worker)
    with gunicorn(tmp_path, *options, CLOSEGUARD_MAX_MESSAGE_SIZE=str(LARGE_LIMIT)) as service:
        over = await talk(f"{service.ws}/ws/echo", (b"x" * (LARGE_LIMIT + 1),), timeout=30)
        await until(lambda: len(service.close_records("/ws/echo")) == 1, what="the record")
        found = service.close_records("/ws/echo")
        if worker is None:
            # Between the two limits: echoed, not closed.
            between = await talk(
                f"{service.ws}/ws/echo", (b"y" * (UVICORN_LIMIT + 1),), expect_replies=1,
                close=(1000, ""), timeout=30,
            )  # fmt: skip
            assert between.messages == (b"y" * (UVICORN_LIMIT + 1),)
    assert over.close == expected
    initiator = "middleware" if worker is None else "client"
    assert [(r["code"], r["reason"], r["initiator"]) for r in found] == [(*expected, initiator)]


def test_the_config_refuses_to_start_without_a_metrics_directory() -> None:
    """Two workers without PROMETHEUS_MULTIPROC_DIR would each count alone: a loud stop."""
    result = subprocess.run(
        command(free_port()), cwd=ROOT, env=app_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "set PROMETHEUS_MULTIPROC_DIR" in result.stderr


@pytest.mark.parametrize(
    ("worker", "recorded"),
    [
        # uvicorn gives up (at 1 s, graceful_timeout minus the margin) and cancels the stuck
        # task: one record.
        (None, True),
        # uvicorn waits without limit, and gunicorn's SIGKILL comes first: no record at all.
        ("uvicorn_worker.UvicornWorker", False),
    ],
    ids=["shipped-worker", "stock-worker"],
)
async def test_a_connection_stuck_at_shutdown_is_recorded_before_the_kill(
    tmp_path: Path, worker: str | None, recorded: bool
) -> None:
    """A client that sends and never reads leaves the echo stuck in its send at SIGTERM."""
    options = ["--graceful-timeout", "4", "--workers", "1"]
    if worker is not None:
        options += ["--worker-class", worker]
    with gunicorn(tmp_path, *options, workers=1) as service:
        sock = blocking_handshake(service.port, "/ws/echo")
        try:
            assert sock.recv(4096).startswith(b"HTTP/1.1 101")
            sock.settimeout(1.0)
            frame = client_frame(0x1, b"x" * 60_000)
            with contextlib.suppress(TimeoutError, socket.timeout):
                for _ in range(1000):  # until the server stops reading: its echo is stuck
                    sock.sendall(frame)
            started = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(service.process.wait, 30) == 0
            took = time.monotonic() - started
            found = service.close_records("/ws/echo")
        finally:
            sock.close()
    if recorded:
        assert took < 4.0
        assert [(r["accepted"], r["code"], r["initiator"]) for r in found] == [
            (True, None, "server")
        ]
    else:
        assert took >= 4.0
        assert found == []


#: The drain window the preStop test sets, and how soon each worker notices the drain file.
WINDOW = 2.0
NOTICE = 1.0


async def closed_at(client: ClientConnection, started: float) -> tuple[float, int, str]:
    """When an idle client got its Close frame, in seconds after ``started``, and what it said."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(client.recv(), NOTICE + WINDOW + 10)
    frame = client.protocol.close_rcvd
    assert frame is not None, "the connection ended without a Close frame"
    return time.monotonic() - started, frame.code, frame.reason


async def test_the_prestop_sequence_drains_both_workers_before_sigterm(tmp_path: Path) -> None:
    """What deploy/kubernetes/ does, under gunicorn: touch the drain file, wait out the window,
    then SIGTERM. Each worker spreads its clients' 1012 over the window, a client arriving
    meanwhile gets 503, and SIGTERM then finds nothing to close."""
    drain_file = tmp_path / "drain"
    with gunicorn(
        tmp_path, CLOSEGUARD_DRAIN_FILE=str(drain_file), CLOSEGUARD_DRAIN_WINDOW=str(WINDOW)
    ) as service:
        pids = worker_pids(service.process.pid)
        async with AsyncExitStack() as stack:
            held = await spread_over_workers(stack, service, pids, each=5)
            assert http_get(f"{service.http}/readyz")[0] == 200
            assert "closeguard_draining 0.0" in metric_lines(service)

            drain_file.touch()
            started = time.monotonic()
            waiting = {
                pid: [asyncio.ensure_future(closed_at(client, started)) for client in clients]
                for pid, clients in held.items()
            }
            await asyncio.sleep(NOTICE + 0.3)  # both workers drain by now
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"{service.ws}/ws/echo", open_timeout=5)
            ready = await asyncio.to_thread(http_get, f"{service.http}/readyz")
            ends = {pid: await asyncio.gather(*futures) for pid, futures in waiting.items()}
            draining_metric = metric_lines(service)
        await until(
            lambda: len(service.close_records("/ws/echo")) == sum(map(len, held.values())) + 1,
            what="every record",
        )
        before = service.log_lines()
        # preStop is over: the runtime's SIGTERM.
        service.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(service.process.wait, 20) == 0
        after = service.log_lines()

    for pid, closes in ends.items():
        assert {(code, reason) for _, code, reason in closes} == {(1012, "draining")}, pid
        times = sorted(at for at, _, _ in closes)
        # Within the notice and the window, spread over it: each of a worker's N clients has a
        # slice of WINDOW / N, so no 100 ms holds more than two of one worker's closes.
        assert times[-1] <= NOTICE + WINDOW + 1.0, times
        assert times[-1] - times[0] >= WINDOW / 2, times
        assert max(sum(1 for t in times if s <= t < s + 0.1) for s in times) <= 2, times
    response = refused.value.response
    assert (response.status_code, response.headers["Retry-After"]) == (503, "2")
    assert ready[0] == 503
    assert "closeguard_draining 1.0" in draining_metric

    records = [line for line in before if line.get("logger") == "closeguard"]
    drained = [r for r in records if r["http_status"] is None]
    assert len(drained) == sum(map(len, held.values()))
    assert len({r["connection_id"] for r in drained}) == len(drained)
    assert {(r["code"], r["reason"], r["initiator"]) for r in drained} == {
        (1012, "draining", "middleware")
    }
    [refusal] = [r for r in records if r["http_status"] is not None]
    assert (refusal["accepted"], refusal["http_status"], refusal["reason"]) == (
        False, 503, "draining"
    )  # fmt: skip
    # SIGTERM found nothing open: no record more; and nothing went wrong at any point.
    assert [line for line in after if line.get("logger") == "closeguard"] == records
    assert errors(after) == []
