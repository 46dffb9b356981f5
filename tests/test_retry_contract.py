"""The retry contract (closeguard.RETRY_CONTRACT) against the code that sends the closes: every
reason the drain and the policies put on the wire has its row with the code they send, every
code may go on the wire, every reason fits in a Close frame."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reconnect_client import Ended, keep_connected
from websockets.asyncio.client import ClientConnection, connect

from closeguard import RETRY_CONTRACT, CloseCode, RetryAdvice, check_close, policies
from closeguard.codes import POLICY_REASONS
from closeguard.connection import DRAINING_REASON, INTERNAL_ERROR_REASON, SHUTDOWN_REASON
from closeguard.options import MAX_LIMIT
from closeguard.policies import CAPACITY_RETRY_AFTER
from tests.servers import RunningServer, run_server


def closes() -> dict[str, set[int | None]]:
    """Each reason's codes in the table (None: an HTTP refusal)."""
    found: dict[str, set[int | None]] = {}
    for row in RETRY_CONTRACT:
        found.setdefault(row.reason, set()).add(row.code)
    return found


def test_every_policy_close_has_its_row_with_the_code_the_policy_sends() -> None:
    table = closes()
    for reason, code in policies.POLICY_CLOSES.items():
        assert code in table[reason], reason
    # The caps refuse with HTTP 503 where the server can, as the drain does.
    assert table[policies.OVER_CAPACITY] == {None, CloseCode.TRY_AGAIN_LATER}
    assert table[DRAINING_REASON] == {None, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER}
    assert table[INTERNAL_ERROR_REASON] == {CloseCode.INTERNAL_ERROR}
    # No reason: the app's forgotten close, and the server's teardown (as uvicorn's own 1012).
    assert table[""] == {CloseCode.NORMAL_CLOSURE, CloseCode.SERVICE_RESTART}
    assert CloseCode.SERVICE_RESTART in table[SHUTDOWN_REASON]  # the row says what is sent


def test_the_reasons_a_metric_may_carry_are_the_drain_s_and_the_policies() -> None:
    assert {*policies.POLICY_CLOSES, DRAINING_REASON} == POLICY_REASONS


def test_every_row_may_go_on_the_wire() -> None:
    for row in RETRY_CONTRACT:
        # The 1009's reason names the route's limit: the longest one must fit too.
        reason = row.reason.format(limit=MAX_LIMIT)
        assert (row.code is None) != (row.http_status is None), row
        if row.code is not None:
            check_close(row.code, reason)
        check_close(row.under_daphne if row.under_daphne != 1006 else 1000, reason)
        assert len(reason.encode()) <= 123


def test_refusals_say_when_to_come_back() -> None:
    refusals = [row for row in RETRY_CONTRACT if row.http_status is not None]
    assert {row.http_status for row in refusals} == {503}
    assert all(row.advice is RetryAdvice.BACK_OFF for row in refusals)
    assert f"Retry-After: {CAPACITY_RETRY_AFTER}" in next(
        row.sent_when for row in refusals if row.reason == policies.OVER_CAPACITY
    )


def test_daphne_s_clients_get_only_what_daphne_sends() -> None:
    """1000 and 3000-4999 from closeguard, 1011 from daphne's own error path, 1006 (no Close
    frame) when daphne stops."""
    assert {row.under_daphne for row in RETRY_CONTRACT} <= {1000, 1006, 1011}


def test_one_row_per_close() -> None:
    keys = [(row.code, row.http_status, row.reason) for row in RETRY_CONTRACT]
    assert len(keys) == len(set(keys))


# The clients that follow it: docs/examples/reconnect_client.py against real servers ---------


class Waits:
    """Stands in for ``random.uniform`` in the client: it always waits the ceiling (so the
    test knows the waits the contract asks for), and writes each one down."""

    def __init__(self) -> None:
        self.ceilings: list[float] = []

    def __call__(self, low: float, high: float) -> float:
        self.ceilings.append(high)
        return high


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    waits = Waits()
    monkeypatch.setattr(random, "uniform", waits)
    return waits


@pytest.fixture
def policy_server(tmp_path: Path) -> Iterator[RunningServer]:
    with run_server("uvicorn-websockets-sansio", tmp_path, app="tests.policy_app:app") as server:
        yield server


BASE = 0.1


def outcome(server: RunningServer, token: str) -> list[tuple[Any, ...]]:
    return [
        (record["code"], record["http_status"], record["reason"], record["initiator"])
        for record in server.records_for(token)
    ]


async def test_the_python_client_reconnects_after_an_idle_timeout(
    policy_server: RunningServer, waits: Waits
) -> None:
    token = uuid.uuid4().hex[:12]
    connections = 0

    async def session(websocket: ClientConnection) -> None:
        nonlocal connections
        connections += 1
        await websocket.send("hi")
        assert await websocket.recv() == "hi"
        if connections < 3:
            await websocket.recv()  # the echo sends nothing more: idle until closed

    ended = await asyncio.wait_for(
        keep_connected(f"{policy_server.url}/idle/{token}", session, base_delay=BASE), 20
    )
    assert (ended, connections) == (Ended(1000, ""), 3)
    # Reconnected at once (a jittered wait of up to the base), with no backoff: nothing failed.
    assert waits.ceilings == [BASE, BASE]
    idle = (1001, None, "idle_timeout", "middleware")
    assert outcome(policy_server, token) == [idle, idle, (1000, None, "", "client")]


async def test_the_python_client_stops_on_a_first_message_timeout(
    policy_server: RunningServer, waits: Waits
) -> None:
    token = uuid.uuid4().hex[:12]

    async def session(websocket: ClientConnection) -> None:
        await websocket.recv()  # waits for the server to speak first: a broken protocol

    ended = await asyncio.wait_for(
        keep_connected(f"{policy_server.url}/first/{token}", session, base_delay=BASE), 20
    )
    assert ended == Ended(1008, "first_message_timeout")
    assert waits.ceilings == []
    assert outcome(policy_server, token) == [(1008, None, "first_message_timeout", "middleware")]


async def test_the_python_client_backs_off_when_the_room_is_full(
    policy_server: RunningServer, waits: Waits
) -> None:
    token = uuid.uuid4().hex[:12]
    room = f"{policy_server.url}/cap/{token}"

    async def session(websocket: ClientConnection) -> None:
        raise AssertionError("the room is full: no connection should open")

    async with connect(room), connect(room):  # the cap: CAP connections
        ended = await asyncio.wait_for(
            keep_connected(room, session, base_delay=BASE, max_attempts=4), 20
        )
    assert ended == Ended(None, "", 503)
    assert waits.ceilings == [BASE, 2 * BASE, 4 * BASE]  # doubling, after each refusal
    refused = (None, 503, "over_capacity", "middleware")
    kept = (1000, None, "", "client")
    assert sorted(outcome(policy_server, token), key=str) == [kept] * 2 + [refused] * 4


async def test_the_python_client_comes_back_after_a_drain_and_backs_off_while_refused(
    tmp_path: Path, waits: Waits
) -> None:
    drain_file = tmp_path / "drain"
    env = {"CLOSEGUARD_DRAIN_FILE": str(drain_file), "CLOSEGUARD_DRAIN_WINDOW": "0.5"}
    token = uuid.uuid4().hex[:12]
    connections = 0

    async def session(websocket: ClientConnection) -> None:
        nonlocal connections
        connections += 1
        drain_file.touch()
        await websocket.recv()  # until the drain closes it

    with run_server("uvicorn-websockets-sansio", tmp_path, env, "tests.drain_app:app") as server:
        ended = await asyncio.wait_for(
            keep_connected(f"{server.url}/echo/{token}", session, base_delay=BASE, max_attempts=4),
            20,
        )
        records = outcome(server, token)
    assert (ended, connections) == (Ended(None, "", 503), 1)
    # 1012: reconnect at once; then the draining process refuses, and each wait doubles.
    assert waits.ceilings == [BASE, BASE, 2 * BASE]
    assert (
        records
        == [(1012, None, "draining", "middleware")] + [(None, 503, "draining", "middleware")] * 3
    )


# The docs page: docs/retry-contract.md carries the table as the package has it ---------------

PAGE = Path(__file__).resolve().parent.parent / "docs" / "retry-contract.md"
START, END = "<!-- the table: RETRY_CONTRACT -->\n", "<!-- end of the table -->\n"


def contract_table() -> str:
    """closeguard.RETRY_CONTRACT as the page shows it, one Markdown row per close."""
    lines = [
        "| close | reason | sent by, and when | the client should | daphne's clients get |",
        "|---|---|---|---|---|",
    ]
    for row in RETRY_CONTRACT:
        close = f"HTTP {row.http_status}" if row.code is None else f"{row.code}"
        reason = f"`{row.reason}`" if row.reason else "(none)"
        daphne = "1006 (no Close frame)" if row.under_daphne == 1006 else f"{row.under_daphne}"
        if row.under_daphne == 1000:
            daphne += f", no reason{' (accepted, then closed)' if row.code is None else ''}"
        advice = f"**{row.advice.value}**"
        lines.append(f"| {close} | {reason} | {row.sent_when} | {advice} | {daphne} |")
    return "\n".join(lines) + "\n"


def test_the_page_shows_the_contract_as_the_package_ships_it() -> None:
    """To mend a failure, paste ``contract_table()``'s text between the page's markers."""
    page = PAGE.read_text()
    shown = page[page.index(START) + len(START) : page.index(END)]
    assert shown.strip("\n") + "\n" == contract_table()
