"""Load with faults: 1,000 concurrent connections to uvicorn (own process) through closeguard.

All connections are opened first and held open together; then each plays its scenario at once:
normal closes, exceptions, invalid close codes, oversized messages, client closes and abrupt
TCP drops (RST). Every connection must end as its scenario says on the client's side, the server
must hold exactly one record per connection, no task may be left running, and the server's
memory must come back near where it started. The figures are printed (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from bench.harness import free_port, raise_fd_limit, running
from bench.rawws import RawClient, Wire
from tests.fuzz_support import LOAD_LIMIT, LOAD_SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 1000
HARD_CAP = 120.0  # seconds for the whole load phase
#: What the client must see per scenario (None: the client dropped, it sees nothing).
EXPECTED_CLOSE: dict[str, tuple[int, str] | None] = {
    "normal": (1000, "done"),
    "exception": (1011, "internal error"),
    "invalid": (1011, "internal error"),
    "oversize": (1009, f"message exceeds the limit of {LOAD_LIMIT} bytes"),
    "client_close": (4000, "client bye"),
    "drop": None,
    "return": (1000, ""),
}
#: What the server's record must say per scenario: (codes, initiator, exception).
EXPECTED_RECORD: dict[str, tuple[set[int], str, str | None]] = {
    "normal": ({1000}, "app", None),
    "exception": ({1011}, "middleware", "RuntimeError"),
    "invalid": ({1011}, "middleware", "closeguard.codes.InvalidCloseCode"),
    "oversize": ({1009}, "middleware", None),
    "client_close": ({4000}, "client", None),
    "drop": ({1005, 1006}, "client", None),  # as the server reports a drop (1006 legacy)
    "return": ({1000}, "middleware", None),
}


def debug(port: int, collect: bool = False) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/debug{'?gc=1' if collect else ''}"
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def load_server(ws: str, port: int, log: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """The load app under uvicorn ``--ws ws``; uvicorn's tracebacks for the exception
    scenarios go to ``log``."""
    command = [
        sys.executable, "-m", "uvicorn", "tests.fuzz_support:load_app", "--host", "127.0.0.1",
        "--port", str(port), "--ws", ws, "--lifespan", "off", "--log-level", "error",
        "--backlog", "2048", "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip
    return running(command, port, output=log, timeout=15, grace=15, what="the load server")


class Barrier:
    """Open every connection first; release them together once the last handshake is done."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.ready = 0
        self.go = asyncio.Event()

    def arrived(self) -> None:
        self.ready += 1
        if self.ready == self.count:
            self.go.set()


async def one_connection(
    port: int, scenario: str, index: int, handshakes: asyncio.Semaphore, barrier: Barrier
) -> tuple[str, Wire]:
    try:
        async with handshakes:  # bound the handshakes in flight, not the connections held
            conn = await RawClient.connect(port, f"/load/{scenario}/{index}", timeout=30)
    finally:
        barrier.arrived()
    assert conn.opened, f"handshake for {scenario}/{index}: HTTP {conn.wire.status}"
    await barrier.go.wait()
    if scenario == "drop":
        conn.abort(reset=True)
        return scenario, conn.wire
    if scenario == "oversize":
        await conn.send_bytes(b"o" * (LOAD_LIMIT + 1))
    elif scenario == "client_close":
        await conn.send_close(4000, b"client bye")
        return scenario, await conn.read_to_end(60, answer_close=False)
    else:
        await conn.send_text(f"go {index}")
    return scenario, await conn.read_to_end(60)


async def run_load(port: int, count: int) -> tuple[list[tuple[str, Wire]], float]:
    barrier = Barrier(count)
    handshakes = asyncio.Semaphore(100)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            one_connection(port, LOAD_SCENARIOS[i % len(LOAD_SCENARIOS)], i, handshakes, barrier)
            for i in range(count)
        )
    )
    return list(results), time.perf_counter() - started


def check_client_side(results: list[tuple[str, Wire]]) -> None:
    wrong: list[tuple[object, ...]] = []
    for scenario, wire in results:
        expected = EXPECTED_CLOSE[scenario]
        if expected is None:
            continue
        if wire.close != expected or len(wire.closes) != 1:
            wrong.append((scenario, wire.close, len(wire.closes)))
        elif wire.frames[-1].opcode != 0x8:
            wrong.append((scenario, "frames after the close", wire.frames))
    assert wrong == [], f"{len(wrong)} connections ended unexpectedly, e.g. {wrong[:5]}"


def check_records(records: list[list[Any]], where: str) -> Counter[str]:
    assert len(records) == CONNECTIONS, f"{len(records)} records, not {CONNECTIONS} ({where})"
    paths = Counter(record[0] for record in records)
    assert max(paths.values()) == 1, "a connection with more than one record"
    seen: Counter[str] = Counter()
    wrong = []
    for path, code, reason, initiator, exception, _requested in records:
        scenario = path.split("/")[2]
        codes, who, exc = EXPECTED_RECORD[scenario]
        seen[f"{scenario}:{code}"] += 1
        if code not in codes or initiator != who or exception != exc:
            wrong.append((path, code, reason, initiator, exception))
    assert wrong == [], f"{len(wrong)} records unexpected ({where}), e.g. {wrong[:5]}"
    return seen


def settle(port: int, records: int, tasks: int | None = None) -> dict[str, Any]:
    """The server's state once it holds ``records`` records and ``tasks`` tasks (or 20 s on)."""
    deadline = time.monotonic() + 20
    state = debug(port, collect=True)
    while time.monotonic() < deadline and (
        len(state["records"]) < records or (tasks is not None and state["tasks"] > tasks)
    ):
        time.sleep(0.1)
        state = debug(port, collect=True)
    return state


@pytest.mark.parametrize("ws_impl", ["websockets-sansio", "websockets", "wsproto"])
def test_thousand_concurrent_connections_with_faults(ws_impl: str, tmp_path: Path) -> None:
    fd_limit = raise_fd_limit()
    assert fd_limit >= CONNECTIONS + 500, f"ulimit -n hard limit {fd_limit} is below the needed"
    port = free_port()
    log = tmp_path / "server.log"
    with load_server(ws_impl, port, log):
        # Warm up (imports, caches, the first of each path) so "before" is a fair baseline.
        asyncio.run(asyncio.wait_for(run_load(port, 70), 30))
        before = settle(port, 70)
        time.sleep(0.2)  # the last connection tasks finish just after their record
        before = debug(port, collect=True)
        base = len(before["records"])
        rounds = []
        for round_number in (1, 2):
            results, seconds = asyncio.run(asyncio.wait_for(run_load(port, CONNECTIONS), HARD_CAP))
            check_client_side(results)
            after = settle(port, base + CONNECTIONS, before["tasks"])
            seen = check_records(after["records"][base:], f"round {round_number}; log {log}")
            assert after["tasks"] == before["tasks"], (
                f"{after['tasks'] - before['tasks']} asyncio tasks left running in the server"
            )
            base = len(after["records"])
            rounds.append((seconds, after["VmRSS"] / 1024, seen))
        mib = before["VmRSS"] / 1024
        peak = after["VmHWM"] / 1024
        print(
            f"\nload[{ws_impl}]: {CONNECTIONS} concurrent connections per round, "
            f"{rounds[0][0]:.1f} s and {rounds[1][0]:.1f} s; {CONNECTIONS} records per round "
            f"{dict(sorted(rounds[0][2].items()))}; server RSS {mib:.1f} MiB before, "
            f"peak {peak:.1f} MiB, {rounds[0][1]:.1f} MiB after round 1, "
            f"{rounds[1][1]:.1f} MiB after round 2; tasks {before['tasks']} before and after; "
            f"ulimit -n {fd_limit}"
        )
        # Generous: the allocator keeps what the peak needed, but a second round of 1,000
        # connections must fit in it (no per-connection leak), and the first must not keep
        # more than the peak's worth.
        assert rounds[0][1] - mib < max(40.0, peak - mib), "RSS after round 1"
        assert rounds[1][1] - rounds[0][1] < 15.0, (
            f"RSS grew {rounds[1][1] - rounds[0][1]:.1f} MiB in a second round: a leak"
        )
