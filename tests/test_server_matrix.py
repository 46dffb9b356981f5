"""docs/servers.md's server table: what a client sees with closeguard and without it, per server.

For every server kind in ``tests/servers.py`` two processes run side by side: the wire app
(closeguard in front) and ``tests/bare_app.py`` (the same routes, no closeguard). Each
scenario is probed against both at once. The test checks the closeguard column against what
closeguard promises, bent only by the server limits named in ``servers.LIMITS``; the bare
column is what the server does on its own. ``python -m tests.test_server_matrix`` prints the
markdown table from a real run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from tests import servers
from tests.servers import BARE_APP, HTTP_PARSERS, SERVERS, run_server
from tests.wire_app import DEFAULT_LIMIT

#: How long a probe waits for the server to close before calling the connection left open.
OPEN_AFTER = 2.5
GENERIC_1011 = (1011, "internal error")
TOO_BIG = (1009, f"message exceeds the limit of {DEFAULT_LIMIT} bytes")


@dataclass(frozen=True)
class Cell:
    """What the client saw: an HTTP refusal, a Close frame, none (TCP closed), nothing yet, or
    no HTTP response to the handshake at all."""

    status: int | None = None
    close: tuple[int, str] | None = None
    left_open: bool = False
    echoed: bool = False
    no_response: bool = False

    def text(self) -> str:
        if self.no_response:
            return "TCP closed before any HTTP response"
        if self.status is not None:
            return f"HTTP {self.status}"
        prefix = "echoed, " if self.echoed else ""
        if self.left_open:
            return f"{prefix}left open ({OPEN_AFTER} s)"
        if self.close is None:
            return f"{prefix}no close frame (1006)"
        code, reason = self.close
        size = len(reason.encode())
        shown = reason if size <= 24 else f"{reason[:12]}… ({size} B)"
        return f"{prefix}{code} '{shown}'" if reason else f"{prefix}{code}"


@dataclass(frozen=True)
class Scenario:
    label: str
    route: str
    #: The closeguard column for a server kind.
    expected: Callable[[str], Cell]
    send: tuple[str | bytes, ...] = ()
    client_close: tuple[int, str] | None = None
    query: str = ""


def _closes(code: int, reason: str = "bye") -> Callable[[str], Cell]:
    return lambda kind: Cell(close=servers.wire_close(kind, code, reason))


SCENARIOS: dict[str, Scenario] = {
    "close-1000": Scenario("app closes 1000 'bye'", "/close/1000", _closes(1000), query="bye"),
    "close-1001": Scenario("app closes 1001 'bye'", "/close/1001", _closes(1001), query="bye"),
    "close-1008": Scenario("app closes 1008 'bye'", "/close/1008", _closes(1008), query="bye"),
    "close-4000": Scenario("app closes 4000 'bye'", "/close/4000", _closes(4000), query="bye"),
    "close-1005": Scenario(
        "app closes 1005 (reserved)", "/close/1005", _closes(*GENERIC_1011), query="bye"
    ),
    "close-1006": Scenario(
        "app closes 1006 (reserved)", "/close/1006", _closes(*GENERIC_1011), query="bye"
    ),
    "close-5000": Scenario(
        "app closes 5000 (out of range)", "/close/5000", _closes(*GENERIC_1011), query="bye"
    ),
    "long-reason": Scenario(
        "app closes 4000 with a 200-byte reason",
        "/close/4000",
        _closes(*GENERIC_1011),
        query="a" * 200,
    ),
    "raise": Scenario("app raises after accept", "/raise", _closes(*GENERIC_1011)),
    "raise-before-accept": Scenario(
        "app raises before accept",
        "/raise-before-accept",
        lambda kind: Cell(
            status=403 if servers.limited(kind, "crash_before_accept_is_403") else 500
        ),
    ),
    "refuse": Scenario("app closes before accept", "/refuse", lambda kind: Cell(status=403)),
    "return": Scenario("app returns without closing", "/return", _closes(1000, "")),
    "oversized": Scenario(
        f"client sends {DEFAULT_LIMIT + 1} B (closeguard limit {DEFAULT_LIMIT})",
        "/echo",
        _closes(*TOO_BIG),
        send=("x" * (DEFAULT_LIMIT + 1),),
    ),
    "client-close": Scenario(
        "client closes 4321 'bye' (the reply)",
        "/echo",
        lambda kind: Cell(close=servers.client_close_reply(kind, 4321, "bye")),
        client_close=(4321, "bye"),
    ),
}


async def probe(base: str, scenario: Scenario) -> Cell:
    url = f"{base}{scenario.route}/{uuid.uuid4().hex[:12]}"
    if scenario.query:
        url += f"?reason={scenario.query}"
    echoed = False
    try:
        async with connect(url, open_timeout=5, close_timeout=5, max_size=None) as ws:
            for message in scenario.send:
                await ws.send(message)
            if scenario.client_close is not None:
                await ws.close(*scenario.client_close)
            while True:
                reply = await asyncio.wait_for(ws.recv(), OPEN_AFTER)
                echoed = echoed or reply in scenario.send
    except InvalidStatus as exc:
        return Cell(status=exc.response.status_code)
    except InvalidMessage:
        # A cell of its own, not an error ending every probe: the table then says which
        # scenario, and which column, saw it.
        return Cell(no_response=True)
    except ConnectionClosed as exc:
        received = exc.rcvd
        close = None if received is None else (received.code, received.reason)
        return Cell(close=close, echoed=echoed)
    except asyncio.TimeoutError:  # not the builtin before Python 3.11
        return Cell(left_open=True, echoed=echoed)
    raise AssertionError("unreachable: the loop only ends by an exception")


Row = dict[str, tuple[Cell, Cell]]  # scenario -> (without closeguard, with closeguard)


async def _probe_all(bare: str, guarded: str) -> Row:
    names = list(SCENARIOS)
    cells = await asyncio.gather(
        *(probe(base, SCENARIOS[name]) for name in names for base in (bare, guarded))
    )
    return {name: (cells[2 * i], cells[2 * i + 1]) for i, name in enumerate(names)}


def measure(kind: str, workdir: Path) -> Row:
    """Serve the bare and the guarded app under ``kind``; probe every scenario against both."""
    with (
        run_server(kind, workdir, app=BARE_APP) as bare,
        run_server(kind, workdir) as guarded,
    ):
        return asyncio.run(_probe_all(bare.url, guarded.url))


def mismatches(kind: str, row: Row) -> list[str]:
    wrong = []
    for name, (_, seen) in row.items():
        expected = SCENARIOS[name].expected(kind)
        if seen != expected:
            wrong.append(f"{name}: saw {seen.text()}, expected {expected.text()}")
    return wrong


@pytest.mark.parametrize("kind", sorted({**SERVERS, **HTTP_PARSERS}))
def test_closeguard_column(kind: str, tmp_path: Path) -> None:
    row = measure(kind, tmp_path)
    assert not mismatches(kind, row), mismatches(kind, row)
    # Without closeguard at least one scenario ends otherwise on every server: the matrix
    # would show nothing if the bare app were guarded too.
    assert any(bare != guarded for bare, guarded in row.values())


def table(rows: dict[str, Row]) -> str:
    kinds = list(rows)
    lines = [
        "| behaviour | " + " | ".join(f"{kind}: without / **with**" for kind in kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for name, scenario in SCENARIOS.items():
        cells = []
        for kind in kinds:
            bare, guarded = rows[kind][name]
            cells.append(f"{bare.text()} / **{guarded.text()}**")
        lines.append(f"| {scenario.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    rows: dict[str, Row] = {}
    failed = []
    with tempfile.TemporaryDirectory() as workdir:
        for kind in {**SERVERS, **HTTP_PARSERS}:
            rows[kind] = measure(kind, Path(workdir))
            failed += [f"{kind}: {wrong}" for wrong in mismatches(kind, rows[kind])]
    print(table(rows))
    for line in failed:
        print(f"MISMATCH {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
