"""What a client sees on the wire, and the one record written, under real servers.

Each server kind in ``tests/servers.py`` serves ``tests/wire_app.py`` in its own process on
127.0.0.1; the ``websockets`` client talks to it. Every behaviour of the middleware is checked
by the close code and reason the client receives and by the single log record of that
connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bench.rawws import RawClient
from tests import servers
from tests.conftest import Seen, talk
from tests.servers import SERVERS, RunningServer, run_server
from tests.wire_app import DEFAULT_LIMIT, SMALL_LIMIT

GENERIC_1011 = (1011, "internal error")


@pytest.fixture(scope="module", params=sorted(SERVERS))
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with run_server(str(request.param), tmp_path_factory.mktemp("server")) as server:
        yield server


class Connection(servers.TokenConnection):
    """A test connection, and what its server makes of a close."""

    # What this server makes of a close: see servers.LIMITS (identity on most servers).

    def limited(self, limit: str) -> bool:
        return servers.limited(self.server.kind, limit)

    def refuses(self, code: int) -> bool:
        return servers.refuses(self.server.kind, code)

    def wire(self, code: int, reason: str) -> tuple[int, str]:
        return servers.wire_close(self.server.kind, code, reason)

    def recorded(self, code: int, reason: str) -> tuple[int, str]:
        return servers.recorded_close(self.server.kind, code, reason)


@pytest.fixture
def conn(running: RunningServer) -> Connection:
    return Connection(running)


# The app's own closes ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1008, 1011, 1012, 1013, 3000, 4000, 4999])
async def test_valid_close_reaches_the_client_unchanged(conn: Connection, code: int) -> None:
    seen = await talk(conn.url(f"/close/{code}", reason="bye"))
    record = conn.record()
    assert record["accepted"] is True
    if conn.refuses(code):  # daphne: its own 1011 is the only close left
        assert seen.close == conn.wire(code, "bye")
        assert (record["code"], record["reason"], record["initiator"]) == (1011, "", "middleware")
        assert (record["requested_code"], record["level"]) == (code, "WARNING")
        return
    if code == 1011:  # its reason is where frameworks put an exception's text: withheld
        assert seen.close == conn.wire(*GENERIC_1011)
        assert (record["code"], record["reason"], record["initiator"]) == (*GENERIC_1011, "app")
        assert (record["requested_code"], record["level"]) == (1011, "WARNING")
        assert "the app's was 'bye'" in record["violation"]
        return
    assert seen.close == conn.wire(code, "bye")
    assert (record["code"], record["reason"], record["initiator"]) == (code, "bye", "app")
    assert record["requested_code"] is None
    assert record["level"] == ("WARNING" if code == 1008 else "INFO")


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
async def test_invalid_code_is_rejected_and_the_client_gets_1011(
    conn: Connection, code: int
) -> None:
    seen = await talk(conn.url(f"/close/{code}", reason="bye"))
    assert seen.close == conn.wire(*GENERIC_1011)
    record = conn.record()
    assert record["code"] == 1011
    assert record["initiator"] == "middleware"
    assert record["requested_code"] == code
    assert record["exception"] == "closeguard.codes.InvalidCloseCode"
    assert f"close code {code} is" in record["violation"]
    assert record["level"] == "ERROR"


@pytest.mark.parametrize("reason", ["a" * 200, "é" * 62])
async def test_reason_over_123_bytes_is_rejected(conn: Connection, reason: str) -> None:
    seen = await talk(conn.url("/close/4000", reason=reason))
    assert seen.close == conn.wire(*GENERIC_1011)
    record = conn.record()
    assert record["requested_code"] == 4000
    assert record["exception"] == "closeguard.codes.InvalidCloseReason"
    assert "the limit is 123 bytes" in record["violation"]


async def test_reason_of_exactly_123_bytes_passes(conn: Connection) -> None:
    reason = "é" * 61 + "a"
    seen = await talk(conn.url("/close/4000", reason=reason))
    assert seen.close == conn.wire(4000, reason)


async def test_raw_app_can_recover_from_a_rejected_close(conn: Connection) -> None:
    seen = await talk(conn.url("/raw/recover/1006"))
    assert seen.close == conn.wire(4000, "rejected 1006")
    record = conn.record()
    assert (record["code"], record["initiator"], record["requested_code"]) == (4000, "app", 1006)
    assert record["exception"] is None
    assert record["level"] == "WARNING"


@pytest.mark.parametrize(
    ("code", "reason", "sent"),
    [
        (1005, "bye", (1000, "bye")),
        (1006, "bye", (1011, "internal error")),
        (999, "bye", (1011, "internal error")),
        (4000, "é" * 62, (4000, "é" * 61)),
    ],
)
async def test_replace_mode_sends_a_substitute_and_warns(
    conn: Connection, code: int, reason: str, sent: tuple[int, str]
) -> None:
    seen = await talk(conn.url(f"/replace/close/{code}", reason=reason))
    assert seen.close == conn.wire(*sent)
    record = conn.record()
    assert (record["code"], record["reason"]) == conn.recorded(*sent)
    assert record["requested_code"] == code
    assert record["initiator"] == ("middleware" if conn.refuses(sent[0]) else "app")
    assert record["level"] == "WARNING"
    assert record["violation"]


# Exceptions ---------------------------------------------------------------------------------


async def test_exception_after_accept_becomes_1011_without_its_text(conn: Connection) -> None:
    seen = await talk(conn.url("/raise"))
    assert seen.close == conn.wire(*GENERIC_1011)
    record = conn.record()
    assert (record["code"], record["initiator"]) == (1011, "middleware")
    assert record["exception"] == "RuntimeError"
    assert record["level"] == "ERROR"
    # Re-raised: the server logs the traceback, so closeguard's record carries none.
    assert record["traceback"] is False
    assert "hunter2" in conn.server_output()
    assert "hunter2" not in record["message"]


async def test_without_reraise_the_traceback_is_logged_once_by_closeguard(
    conn: Connection,
) -> None:
    seen = await talk(conn.url("/swallow/raise"))
    assert seen.close == conn.wire(*GENERIC_1011)
    record = conn.record()
    assert record["traceback"] is True
    logged_once = 1 if conn.limited("prints_closeguard_log") else 0  # closeguard's own line
    assert conn.server_output().count("RuntimeError: secret detail") == logged_once


async def test_exception_before_accept_is_the_servers_http_500(conn: Connection) -> None:
    seen = await talk(conn.url("/raise-before-accept"))
    assert seen == Seen(status=403 if conn.limited("crash_before_accept_is_403") else 500)
    record = conn.record()
    assert record["accepted"] is False
    assert record["code"] is None
    assert record["exception"] == "RuntimeError"
    assert record["level"] == "ERROR"


async def test_close_before_accept_is_a_refused_handshake(conn: Connection) -> None:
    seen = await talk(conn.url("/refuse"))
    assert seen == Seen(status=403)
    record = conn.record()
    assert (record["accepted"], record["http_status"], record["initiator"]) == (False, 403, "app")
    assert record["code"] is None
    assert record["level"] == "INFO"


async def test_send_after_close_raises_and_nothing_follows_the_close(conn: Connection) -> None:
    seen = await talk(conn.url("/raw/send-after-close"))
    assert seen.close == conn.wire(4002, "done")
    assert seen.messages == ()
    record = conn.record()
    assert (record["code"], record["initiator"]) == (4002, "app")
    assert record["exception"] == "closeguard.connection.CloseAlreadySent"
    assert "CloseAlreadySent" in conn.server_output()


# Ends the app did not say ------------------------------------------------------------------


async def test_return_without_close_gives_a_clean_1000(conn: Connection) -> None:
    seen = await talk(conn.url("/return"))
    assert seen.messages == ("ready",)
    assert seen.close == (1000, "")
    record = conn.record()
    assert (record["code"], record["initiator"], record["level"]) == (1000, "middleware", "INFO")
    assert record["messages_sent"] == 1


@pytest.mark.parametrize("route", ["/echo", "/echo-text"])
async def test_client_close_is_recorded_and_leaves_no_traceback(
    conn: Connection, route: str
) -> None:
    seen = await talk(conn.url(route), ("hi",), expect_replies=1, close=(4321, "bye"))
    assert seen.messages == ("hi",)
    assert seen.close == servers.client_close_reply(conn.server.kind, 4321, "bye")
    record = conn.record()
    recorded = servers.client_close_recorded(conn.server.kind, 4321, "bye")
    assert (record["code"], record["reason"], record["initiator"]) == (*recorded, "client")
    assert (record["messages_received"], record["bytes_received"]) == (1, 2)
    assert (record["messages_sent"], record["bytes_sent"]) == (1, 2)
    assert record["exception"] is None
    assert "Traceback" not in conn.server_output()


# Oversized messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "a" * (DEFAULT_LIMIT + 1),
        "é" * (DEFAULT_LIMIT // 2 + 1),  # fewer characters than the limit, more bytes
        b"\x00" * (DEFAULT_LIMIT + 1),
    ],
    ids=["ascii", "multibyte", "bytes"],
)
async def test_message_over_the_limit_closes_1009_naming_the_limit(
    conn: Connection, message: str | bytes
) -> None:
    seen = await talk(conn.url("/echo"), ("small", message), expect_replies=1)
    assert seen.messages == ("small",)
    reason = f"message exceeds the limit of {DEFAULT_LIMIT} bytes"
    assert seen.close == conn.wire(1009, reason)
    record = conn.record()
    code = conn.recorded(1009, reason)[0]
    assert (record["code"], record["initiator"], record["level"]) == (code, "middleware", "WARNING")
    assert record["messages_received"] == 1  # the oversized one never reached the app
    if not conn.refuses(1009):  # daphne logs the exception that makes it send 1011
        assert "Traceback" not in conn.server_output()


async def test_message_at_the_limit_in_utf8_bytes_is_delivered(conn: Connection) -> None:
    message = "é" * (DEFAULT_LIMIT // 2)
    seen = await talk(conn.url("/echo"), (message,), expect_replies=1, close=(1000, ""))
    assert seen.messages == (message,)
    # Text is counted in UTF-8 bytes, as on the wire.
    assert conn.record()["bytes_received"] == len(message.encode())


async def test_per_route_limit(conn: Connection) -> None:
    seen = await talk(conn.url("/small/echo"), ("x" * (SMALL_LIMIT + 1),))
    assert seen.close == conn.wire(1009, f"message exceeds the limit of {SMALL_LIMIT} bytes")


async def test_the_app_sees_the_records_connection_id(running: RunningServer) -> None:
    first, second = Connection(running), Connection(running)
    seen = [await talk(first.url("/id")), await talk(second.url("/id"))]
    ids = [s.messages[0] for s in seen]
    assert ids[0] != ids[1]
    assert [first.record()["connection_id"], second.record()["connection_id"]] == ids


#: One connection per way a connection can end: (route, what the client sends, its close).
ENDINGS: dict[str, tuple[str, tuple[str, ...], tuple[int, str] | None]] = {
    "the app closes": ("/close/4000", (), None),
    "the app raises after accept": ("/raise", (), None),
    "the app raises before accept": ("/raise-before-accept", (), None),
    "the app refuses the handshake": ("/refuse", (), None),
    "the app returns without a close": ("/return", (), None),
    "the app sends after its close": ("/raw/send-after-close", (), None),
    "the client closes": ("/echo", ("hello",), (4321, "bye")),
    "the client sends too much": ("/echo", ("x" * (DEFAULT_LIMIT + 1),), None),
}


async def test_every_connection_leaves_exactly_one_record(running: RunningServer) -> None:
    """Connections ending every way, a dropped one too, leave one record each; and no path
    in the whole log (this module's other connections too, when they ran) has two."""
    made = {name: Connection(running) for name in [*ENDINGS, "the client drops"]}
    for name, (route, messages, close) in ENDINGS.items():
        await talk(made[name].url(route), messages, close=close)
    dropped = made["the client drops"]
    port = int(running.url.rsplit(":", 1)[1])
    client = await RawClient.connect(port, f"/echo/{dropped.token}")
    assert client.opened
    client.abort()
    await asyncio.sleep(0.05)  # the event loop closes the socket, before the wait blocks it

    found = running.records_by_token([conn.token for conn in made.values()])
    counts = {name: len(found[conn.token]) for name, conn in made.items()}
    assert counts == dict.fromkeys(made, 1), counts
    paths = [line["path"] for line in running.log_lines()]
    assert len(paths) == len(set(paths)), [path for path in paths if paths.count(path) > 1]
