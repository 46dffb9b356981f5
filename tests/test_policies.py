"""Close policies under every server, on the wire: the close each policy sends (its code, its
name as the reason), when, what the app hears, and the one record each connection leaves."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.rawws import OP_TEXT, RawClient, client_frame
from closeguard import policies
from tests.policy_app import CAP, FIRST, IDLE, LIFETIME
from tests.servers import SERVERS, RunningServer, limited, refuses, run_server

APP = "tests.policy_app:app"


def wire_close(kind: str, code: int, reason: str) -> tuple[int, str]:
    """What the client receives for closeguard's ``code``: daphne sends only 1000 and
    3000-4999, so a policy's close falls back to 1000, and it never sends a reason."""
    if refuses(kind, code):
        code = 1000
    return (code, "") if limited(kind, "drops_reasons") else (code, reason)


def recorded_code(kind: str, code: int) -> int:
    return 1000 if refuses(kind, code) else code


@pytest.fixture(params=sorted(SERVERS))
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    env = {"CLOSEGUARD_TEST_APP_LOG": str(tmp_path / "app.jsonl")}
    with run_server(request.param, tmp_path, env=env, app=APP) as server:
        yield server


async def until_closed(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str]:
    async def drain() -> None:
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass

    await asyncio.wait_for(drain(), timeout)
    frame = ws.protocol.close_rcvd
    return (None, "") if frame is None else (frame.code, frame.reason)


def app_saw(tmp_path: Path, token: str) -> list[dict[str, Any]]:
    path = tmp_path / "app.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in map(json.loads, lines) if token in line["path"]]


def one_record(server: RunningServer, token: str) -> dict[str, Any]:
    [record] = server.records_for(token)
    return record


async def test_an_idle_client_is_closed_at_its_deadline(
    served: RunningServer, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:12]
    async with connect(f"{served.url}/idle/{token}") as ws:
        await asyncio.sleep(IDLE / 2)
        await ws.send("still here")  # moves the deadline
        assert await ws.recv() == "still here"
        heard = time.monotonic()
        close = await until_closed(ws)
        idle_for = time.monotonic() - heard
    assert close == wire_close(served.kind, 1001, "idle_timeout")
    assert IDLE - 0.1 <= idle_for <= IDLE + 1.0, idle_for
    record = one_record(served, token)
    code = recorded_code(served.kind, 1001)
    assert (record["code"], record["reason"], record["initiator"]) == (
        code,
        "idle_timeout",
        "middleware",
    )
    # Under daphne the record also says the server refused 1001, and so is a WARNING.
    level = "WARNING" if refuses(served.kind, 1001) else "INFO"
    assert (record["level"], record["messages_received"]) == (level, 1)
    assert [(line["code"], line["heard"]) for line in app_saw(tmp_path, token)] == [(1001, 1)]


async def test_a_busy_client_is_closed_at_its_lifetime(served: RunningServer) -> None:
    token = uuid.uuid4().hex[:12]
    async with connect(f"{served.url}/life/{token}") as ws:
        opened = time.monotonic()
        close: tuple[int | None, str] = (None, "")
        for n in range(int(LIFETIME / 0.1) + 20):  # chatty past the lifetime, if let
            try:
                await ws.send(str(n))
                await ws.recv()
            except ConnectionClosed:
                close = await until_closed(ws)
                break
            await asyncio.sleep(0.1)
        lived = time.monotonic() - opened
    assert close == wire_close(served.kind, 1001, "max_lifetime")
    # Up to a tenth earlier than the lifetime: connections opened together end spread out.
    assert LIFETIME * 0.9 - 0.1 <= lived <= LIFETIME + 0.5, lived
    record = one_record(served, token)
    assert (record["reason"], record["initiator"]) == ("max_lifetime", "middleware")


async def test_a_client_that_never_speaks_is_closed_after_the_first_message_timeout(
    served: RunningServer,
) -> None:
    token = uuid.uuid4().hex[:12]
    async with connect(f"{served.url}/first/{token}") as ws:
        opened = time.monotonic()
        close = await until_closed(ws)
        waited = time.monotonic() - opened
    assert close == wire_close(served.kind, 1008, "first_message_timeout")
    assert FIRST - 0.1 <= waited <= FIRST + 1.0, waited
    record = one_record(served, token)
    assert (record["code"], record["reason"]) == (
        recorded_code(served.kind, 1008),
        "first_message_timeout",
    )


async def flood(url: str, path: str, count: int) -> tuple[int | None, str]:
    """Send ``count`` messages far over the rate, then read to the close."""
    async with connect(f"{url}{path}") as ws:
        for n in range(count):
            try:
                await ws.send(str(n))
            except ConnectionClosed:
                break
        return await until_closed(ws)


async def flood_in_one_write(url: str, path: str, count: int) -> tuple[int | None, str]:
    """The same flood as one write, then every frame the server sent, read to its end."""
    client = await RawClient.connect(int(url.rsplit(":", 1)[1]), path)
    frames = b"".join(client_frame(OP_TEXT, str(n).encode()) for n in range(count))
    client.writer.write(frames)
    return (await client.read_to_end()).close or (None, "")


async def test_a_flood_is_closed_and_its_last_message_never_reaches_the_app(
    served: RunningServer, tmp_path: Path
) -> None:
    token, polite = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    # A client still writing when granian resets loses the Close it was sent (servers.LIMITS):
    # there the flood is one write, and the close is read from what the server put on the wire.
    resets = limited(served.kind, "resets_a_client_still_sending")
    flooding = flood_in_one_write if resets else flood
    async with connect(f"{served.url}/rate/{polite}") as calm:
        # Far over 5 a second. 25, not more: once closing, the app reads no more, and uvicorn's
        # legacy implementation stops reading the socket with 32 messages queued, so that its
        # closing handshake waits out its close timeout (10 s).
        close = await flooding(served.url, f"/rate/{token}", 25)
        for n in range(3):  # one every 0.3 s: well under the rate
            await calm.send(str(n))
            assert await calm.recv() == str(n)
            await asyncio.sleep(0.3)
    assert close == wire_close(served.kind, 1008, "rate_limited")
    record = one_record(served, token)
    assert (record["reason"], record["initiator"]) == ("rate_limited", "middleware")
    [saw] = app_saw(tmp_path, token)
    assert saw["code"] == 1008
    assert saw["heard"] == record["messages_received"] <= 5


async def test_a_handshake_over_the_cap_is_refused_with_a_code_clients_retry(
    served: RunningServer,
) -> None:
    """A callable cap counts the connections to one path (a room's URL, say)."""
    token = uuid.uuid4().hex[:12]
    room = f"{served.url}/cap/{token}"
    kept = [await connect(room) for _ in range(CAP)]
    status: int | None = None
    close: tuple[int | None, str] = (None, "")
    try:
        async with connect(room) as ws:
            close = await until_closed(ws)
    except InvalidStatus as refused:
        status = refused.response.status_code
        retry_after = refused.response.headers.get("Retry-After")
    async with connect(f"{served.url}/free/{token}-free") as free:  # other routes: no cap
        await free.send("x")
        assert await free.recv() == "x"
    await kept[0].close()
    await asyncio.sleep(0.3)
    async with connect(f"{served.url}/cap/{token}-other") as other:  # another room: no wait
        await other.send("z")
        assert await other.recv() == "z"
    async with connect(room) as again:  # room again
        await again.send("y")
        assert await again.recv() == "y"
    for ws in kept[1:]:
        await ws.close()
    if served.kind == "daphne":  # no HTTP answer to a handshake: accepted, then closed
        assert (status, close) == (None, wire_close(served.kind, 1013, "over_capacity"))
    else:
        assert (status, retry_after) == (503, "5")
    records = served.records_for(token)
    over = [record for record in records if record["reason"] == "over_capacity"]
    assert [record["initiator"] for record in over] == ["middleware"]
    assert len(records) == CAP + 4  # the kept, the refused, the free, the other room, again


# In process: the clock, the counts ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(policies, "clock", fake)
    return fake


def limits(**values: float) -> policies.Limits:
    """Limits with only ``values`` on, and a burst of one second."""
    return policies.Limits.of(
        idle_timeout=values.get("idle_timeout"),
        max_lifetime=values.get("max_lifetime"),
        first_message_timeout=values.get("first_message_timeout"),
        max_messages_per_second=values.get("max_messages_per_second"),
        max_bytes_per_second=values.get("max_bytes_per_second"),
        burst=values.get("burst", 1.0),
    )


def test_the_rate_is_a_token_bucket_a_burst_deep(clock: Clock) -> None:
    watch = policies.Watch(limits(max_messages_per_second=5))
    assert [watch.heard_from_client(1) for _ in range(5)] == [None] * 5
    assert watch.heard_from_client(1) == "rate_limited"
    clock.now += 0.2  # one message's worth comes back
    assert watch.heard_from_client(1) is None
    assert watch.heard_from_client(1) == "rate_limited"


def test_the_byte_rate_counts_bytes(clock: Clock) -> None:
    watch = policies.Watch(limits(max_bytes_per_second=100))
    assert watch.heard_from_client(60) is None
    assert watch.heard_from_client(60) == "rate_limited"
    clock.now += 1.0
    assert watch.heard_from_client(100) is None


class CountedTokens:
    """A token bucket as it is usually written, counting tokens: what the buckets must match."""

    def __init__(self, rate: float, depth: float) -> None:
        self.rate, self.depth, self.tokens, self.at = rate, depth, depth, 0.0

    def take(self, cost: float, now: float) -> bool:
        self.tokens = min(self.depth, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


#: The time between two messages in the property below is a whole number of these: no
#: message then falls on the very instant a token comes back, a tie float sums may round
#: either way, in either way of writing a bucket.
TICK = 0.000731


@hypothesis.settings(max_examples=300, deadline=None)
# A bucket shallower than one message, or one byte: it still takes one.
@hypothesis.example(rate=0.5, byte_rate=1.0, burst=0.1, gaps=[0, 2800], sizes=[1] * 60)
@hypothesis.given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 50.0, 1000.0]),
    byte_rate=st.sampled_from([1.0, 7.0, 100.0, 5000.0, 1e6]),
    burst=st.sampled_from([0.1, 1.0, 2.5]),
    gaps=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=60),
    sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=60, max_size=60),
)
def test_the_buckets_answer_as_counting_tokens_would(
    rate: float, byte_rate: float, burst: float, gaps: list[int], sizes: list[int]
) -> None:
    """Messages at any times, of any sizes: each rate is broken by the first message a token
    bucket ``burst`` seconds deep (and at least one message deep) would turn away, not before."""
    message_bucket = CountedTokens(rate, max(1.0, rate * burst))
    byte_bucket = CountedTokens(byte_rate, max(1.0, byte_rate * burst))
    fake = Clock()
    start = fake.now
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policies, "clock", fake)
        messages = policies.Watch(limits(max_messages_per_second=rate, burst=burst))
        data = policies.Watch(limits(max_bytes_per_second=byte_rate, burst=burst))
        ticks = 0
        for gap, size in zip(gaps, sizes[: len(gaps)], strict=True):
            ticks += gap
            fake.now = start + ticks * TICK
            broke = (
                messages.heard_from_client(size) is not None,
                data.heard_from_client(size) is not None,
            )
            expected = (
                not message_bucket.take(1, ticks * TICK),
                not byte_bucket.take(size, ticks * TICK),
            )
            assert broke == expected
            if any(broke):
                return  # the connection is closed: what would come after it does not count


def test_deadlines_come_in_order_and_data_moves_only_the_idle_one(clock: Clock) -> None:
    watch = policies.Watch(limits(idle_timeout=10, max_lifetime=100, first_message_timeout=5))
    assert watch.next_deadline() == clock.now + 5
    clock.now += 5
    assert watch.due() == "first_message_timeout"
    clock.now -= 2
    watch.heard_from_client(1)  # spoke at 3 s: the first deadline is moot, idle moves on
    assert watch.next_deadline() == clock.now + 10
    clock.now += 9.9
    assert watch.due() is None
    clock.now += 0.1
    assert watch.due() == "idle_timeout"


def test_lifetimes_of_connections_opened_together_end_spread_over_a_tenth(clock: Clock) -> None:
    ends = [policies.Watch(limits(max_lifetime=100)).lifetime_due for _ in range(200)]
    offsets = sorted(end - clock.now for end in ends if end is not None)
    assert offsets[0] >= 90
    assert offsets[-1] <= 100
    assert offsets[-1] - offsets[0] > 5  # spread, not one instant


def test_caps_count_per_client_and_free_a_place_on_release() -> None:
    caps = policies.Policies(
        idle_timeout=None,
        max_lifetime=None,
        first_message_timeout=None,
        max_connections=3,
        max_connections_per_client=2,
        client_key=None,
        max_messages_per_second=None,
        max_bytes_per_second=None,
        rate_burst=1.0,
    )
    alice = {"type": "websocket", "path": "/ws", "client": ("10.0.0.1", 5000)}
    bob = {**alice, "client": ("10.0.0.2", 5001)}
    first, second = caps.admit(alice), caps.admit(alice)
    assert first is not None
    assert second is not None
    assert caps.admit(alice) is None  # her two places are taken
    third = caps.admit(bob)
    assert third is not None
    assert caps.admit(bob) is None  # the process's three are taken
    caps.release(first)
    assert caps.admit(bob) is not None
    assert caps.open == {("all",): 3, ("client", "10.0.0.1"): 1, ("client", "10.0.0.2"): 2}
