"""The reference service as a person runs it: ``python -m app``, then HTTP, WebSockets and logs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app import settings as app_settings
from bench.harness import ROOT, free_port
from tests.app_support import (
    AppProcess,
    app_env,
    errors,
    http_get,
    python_m_app,
    run_app,
)
from tests.conftest import talk

LIMIT = 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "stdout.log"
    env = app_env(CLOSEGUARD_MAX_MESSAGE_SIZE=str(LIMIT))
    with run_app(python_m_app(port), port, log, env) as running:
        yield running


def close_record(service: AppProcess, nonce: str) -> dict[str, Any]:
    """The record the service keeps for the connection opened with ``?nonce=``.

    It is written right after the close, so it may lag the client by a moment: poll briefly.
    """
    for _ in range(50):
        status, content_type, body = http_get(f"{service.http}/closes?nonce={nonce}")
        if status == 200:
            assert content_type == "application/json"
            record: dict[str, Any] = json.loads(body)
            return record
        time.sleep(0.05)
    raise AssertionError(f"no close record for nonce {nonce} within 2.5 s")


def scrape_until(service: AppProcess, *wanted: str) -> str:
    """The /metrics text once it holds every ``wanted`` line (the gauge drops a moment late)."""
    text = ""
    for _ in range(50):
        status, content_type, text = http_get(f"{service.http}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=")
        if all(line in text.splitlines() for line in wanted):
            return text
        time.sleep(0.05)
    raise AssertionError(f"/metrics never showed {wanted}:\n{text}")


# Settings -----------------------------------------------------------------------------------


def test_settings_defaults_are_the_middlewares() -> None:
    settings = app_settings.load({})
    assert settings.max_message_size == 1_048_576
    assert (settings.log_format, settings.log_level) == ("json", "INFO")
    assert settings.prometheus_multiproc_dir is None
    assert (settings.drain_file, settings.drain_window) == (None, 10.0)


def test_settings_read_every_variable(tmp_path: Path) -> None:
    settings = app_settings.load(
        {
            "CLOSEGUARD_MAX_MESSAGE_SIZE": "2048",
            "CLOSEGUARD_LOG_FORMAT": "TEXT",
            "CLOSEGUARD_LOG_LEVEL": "warning",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "CLOSEGUARD_DRAIN_FILE": str(tmp_path / "drain"),
            "CLOSEGUARD_DRAIN_WINDOW": "2.5",
        }
    )
    assert settings == app_settings.Settings(
        2048, "text", "WARNING", str(tmp_path), str(tmp_path / "drain"), 2.5
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "CLOSEGUARD_MAX_MESSAGE_SIZE",
            "1MB",
            "closeguard: CLOSEGUARD_MAX_MESSAGE_SIZE='1MB' is not allowed: "
            "use a positive whole number of bytes, e.g. 1048576",
        ),
        (
            "CLOSEGUARD_MAX_MESSAGE_SIZE",
            "0",
            "closeguard: CLOSEGUARD_MAX_MESSAGE_SIZE='0' is not allowed: "
            "use a positive whole number of bytes, e.g. 1048576",
        ),
        (
            "CLOSEGUARD_LOG_FORMAT",
            "xml",
            "closeguard: CLOSEGUARD_LOG_FORMAT='xml' is not allowed: use one of json, text",
        ),
        (
            "CLOSEGUARD_LOG_LEVEL",
            "loud",
            "closeguard: CLOSEGUARD_LOG_LEVEL='loud' is not allowed: "
            "use one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        (
            "PROMETHEUS_MULTIPROC_DIR",
            "/nonexistent/closeguard",
            "closeguard: PROMETHEUS_MULTIPROC_DIR='/nonexistent/closeguard' is not allowed: "
            "use an existing, writable, empty directory (one per server), or unset it to run "
            "one process",
        ),
        (
            "CLOSEGUARD_DRAIN_FILE",
            "/nonexistent/closeguard/drain",
            "closeguard: CLOSEGUARD_DRAIN_FILE='/nonexistent/closeguard/drain' is not allowed: "
            "use a file path in an existing directory (the file itself need not exist; its "
            "appearance starts the drain)",
        ),
        (
            "CLOSEGUARD_DRAIN_WINDOW",
            "10s",
            "closeguard: CLOSEGUARD_DRAIN_WINDOW='10s' is not allowed: use a number of seconds "
            "from 0 to 3600, e.g. 10",
        ),
        (
            "CLOSEGUARD_DRAIN_WINDOW",
            "-1",
            "closeguard: CLOSEGUARD_DRAIN_WINDOW='-1' is not allowed: use a number of seconds "
            "from 0 to 3600, e.g. 10",
        ),
    ],
)
@pytest.mark.parametrize("how", ["python -m app", "uvicorn app.main:app"])
def test_a_bad_setting_stops_the_process_with_one_line(
    variable: str, value: str, message: str, how: str
) -> None:
    port = str(free_port())
    command = (
        [sys.executable, "-m", "app", "--port", port]
        if how == "python -m app"
        else [sys.executable, "-m", "uvicorn", "app.main:app", "--port", port]
    )
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=app_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [message]
    assert done.stdout == ""


# HTTP ---------------------------------------------------------------------------------------


def test_healthz(service: AppProcess) -> None:
    assert http_get(f"{service.http}/healthz") == (200, "application/json", '{"status":"ok"}')


def test_readyz_without_a_drain(service: AppProcess) -> None:
    assert http_get(f"{service.http}/readyz") == (200, "application/json", '{"status":"ready"}')


def test_the_page_carries_the_limit_and_the_code_names(service: AppProcess) -> None:
    status, content_type, body = http_get(f"{service.http}/")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    start = body.index('type="application/json">') + len('type="application/json">')
    data = json.loads(body[start : body.index("</script>", start)])
    assert data["max_message_size"] == LIMIT
    names = {entry["code"]: (entry["name"], entry["may_be_sent"]) for entry in data["codes"]}
    assert names[1000] == ("Normal Closure", True)
    assert names[1005] == ("No Status Rcvd", False)
    for asset in ("/static/explorer.js", "/static/explorer.css"):
        assert http_get(f"{service.http}{asset}")[0] == 200


def test_codes_are_described_by_the_server(service: AppProcess) -> None:
    status, _, body = http_get(f"{service.http}/codes/4321")
    assert (status, json.loads(body)) == (200, {"code": 4321, "description": "4321 (private use)"})


def test_an_unknown_record_is_404(service: AppProcess) -> None:
    assert http_get(f"{service.http}/closes/nope")[0] == 404
    assert http_get(f"{service.http}/closes?nonce=nonexistent-nonce")[0] == 404


# WebSockets ---------------------------------------------------------------------------------


async def test_echo_returns_text_and_bytes_under_the_limit(service: AppProcess) -> None:
    seen = await talk(
        f"{service.ws}/ws/echo",
        send=("hello", b"\x00\x01", "x" * LIMIT),
        expect_replies=3,
        close=(1000, "done"),
    )
    assert seen.messages == ("hello", b"\x00\x01", "x" * LIMIT)
    assert seen.close == (1000, "done")


async def test_echo_closes_1009_over_the_limit(service: AppProcess) -> None:
    seen = await talk(f"{service.ws}/ws/echo", send=("x" * (LIMIT + 1),))
    assert seen.close == (1009, f"message exceeds the limit of {LIMIT} bytes")
    assert seen.messages == ()


@pytest.mark.parametrize(
    ("query", "wire"),
    [
        ("code=1000&reason=done", (1000, "done")),
        ("code=4000&reason=custom", (4000, "custom")),
        ("code=1001&reason=going", (1001, "going")),
        ("code=abc", (1008, "code must be a whole number")),
        ("code=1005&reason=invalid", (1011, "internal error")),
        ("code=5000", (1011, "internal error")),
        ("code=4000&reason=" + "a" * 124, (1011, "internal error")),
    ],
)
async def test_close_scenario_puts_a_checked_close_on_the_wire(
    service: AppProcess, query: str, wire: tuple[int, str]
) -> None:
    seen = await talk(f"{service.ws}/ws/close?{query}")
    assert seen.close == wire


async def test_raise_scenario_ends_in_1011(service: AppProcess) -> None:
    seen = await talk(f"{service.ws}/ws/raise")
    assert seen.close == (1011, "internal error")


async def test_refuse_scenario_is_http_403(service: AppProcess) -> None:
    seen = await talk(f"{service.ws}/ws/refuse")
    assert seen.status == 403


async def test_return_scenario_gets_the_forgotten_1000(service: AppProcess) -> None:
    seen = await talk(f"{service.ws}/ws/return")
    assert seen.close == (1000, "")


# Close records, by nonce and by connection id -----------------------------------------------


async def test_the_record_of_a_rejected_close_says_what_was_asked(service: AppProcess) -> None:
    nonce = uuid.uuid4().hex
    seen = await talk(f"{service.ws}/ws/close?code=1005&reason=x&nonce={nonce}")
    assert seen.close == (1011, "internal error")
    record = close_record(service, nonce)
    assert record["code"] == 1011
    assert record["code_description"] == "1011 Internal Error (defined by the standard)"
    assert record["initiator"] == "middleware"
    assert record["requested_code"] == 1005
    assert "1005 is reserved for local use" in str(record["violation"])
    assert record["exception"] == "closeguard.codes.InvalidCloseCode"
    _, _, body = http_get(f"{service.http}/closes/{record['connection_id']}")
    assert json.loads(body) == record


async def test_a_refused_handshake_is_found_by_its_nonce(service: AppProcess) -> None:
    nonce = uuid.uuid4().hex
    assert (await talk(f"{service.ws}/ws/refuse?nonce={nonce}")).status == 403
    record = close_record(service, nonce)
    assert (record["accepted"], record["http_status"], record["code"]) == (False, 403, None)


async def test_a_client_close_is_recorded_with_the_clients_code(service: AppProcess) -> None:
    nonce = uuid.uuid4().hex
    seen = await talk(f"{service.ws}/ws/echo?nonce={nonce}", close=(4321, "bye"))
    assert seen.close == (4321, "bye")
    record = close_record(service, nonce)
    assert (record["code"], record["reason"], record["initiator"]) == (4321, "bye", "client")


# Logs ---------------------------------------------------------------------------------------


async def test_logs_are_json_lines_with_uvicorns_and_the_records_fields(
    service: AppProcess,
) -> None:
    nonce = uuid.uuid4().hex
    await talk(f"{service.ws}/ws/close?code=4000&reason=logged&nonce={nonce}")
    record = close_record(service, nonce)
    line = service.wait_for_log(lambda line: line.get("connection_id") == record["connection_id"])
    assert line["logger"] == "closeguard"
    assert line["level"] == "INFO"
    assert line["message"].startswith("websocket /ws/close closed: code=4000 reason='logged'")
    for field in ("code", "reason", "initiator", "path", "accepted", "duration", "client"):
        assert line[field] == record[field]
    assert "time" in line
    lines = service.log_lines()  # every line parses, or this raises
    messages = [(entry["logger"], entry["message"]) for entry in lines]
    assert any(
        m[0] == "uvicorn.error" and m[1].startswith("Started server process") for m in messages
    )
    assert any(m[0] == "uvicorn.access" and '"GET /healthz HTTP/1.1" 200' in m[1] for m in messages)
    assert all("color_message" not in entry for entry in lines)


async def test_an_exception_is_logged_once_by_uvicorn_with_its_traceback(
    service: AppProcess,
) -> None:
    nonce = uuid.uuid4().hex
    await talk(f"{service.ws}/ws/raise?nonce={nonce}")
    record = close_record(service, nonce)
    line = service.wait_for_log(lambda line: line.get("connection_id") == record["connection_id"])
    assert (line["level"], line["exception"], line["code"]) == ("ERROR", "RuntimeError", 1011)
    traceback = service.wait_for_log(
        lambda line: "the app failed after accept" in str(line.get("exc_info", ""))
    )
    assert traceback["logger"] == "uvicorn.error"


def test_text_format_and_level_are_honoured(tmp_path: Path) -> None:
    port = free_port()
    env = app_env(CLOSEGUARD_LOG_FORMAT="text", CLOSEGUARD_LOG_LEVEL="WARNING")
    with run_app(python_m_app(port), port, tmp_path / "out.log", env) as running:
        seen = asyncio.run(talk(f"{running.ws}/ws/close?code=5000"))
        assert seen.close == (1011, "internal error")
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert running.stop() == -signal.SIGTERM
    text = running.log_text()
    assert "ERROR closeguard: websocket /ws/close closed: code=1011" in text
    assert "code=4000" not in text  # an ordinary close is INFO, below the level
    assert "Started server process" not in text
    assert not text.lstrip().startswith("{")


# Metrics ------------------------------------------------------------------------------------


async def test_metrics_count_the_closes_this_service_made(service: AppProcess) -> None:
    counted = 'closeguard_websocket_closes_total{code="4999",initiator="app",policy="none"} 1.0'
    assert counted not in http_get(f"{service.http}/metrics")[2]
    await talk(f"{service.ws}/ws/close?code=4999&reason=counted")
    text = scrape_until(service, counted, "closeguard_websocket_open_connections 0.0")
    assert "closeguard_websocket_connection_duration_seconds_count" in text


# A drain -------------------------------------------------------------------------------------

DRAIN_WINDOW = 1.5


async def test_the_drain_file_drains_the_service_and_fails_readiness(tmp_path: Path) -> None:
    """The preStop sequence against ``python -m app``: touch CLOSEGUARD_DRAIN_FILE, and the
    open clients get 1012 over CLOSEGUARD_DRAIN_WINDOW, a new one gets 503, /readyz says 503
    while /healthz stays 200, and SIGTERM then finds nothing open."""
    port = free_port()
    drain_file = tmp_path / "drain"
    env = app_env(CLOSEGUARD_DRAIN_FILE=str(drain_file), CLOSEGUARD_DRAIN_WINDOW=str(DRAIN_WINDOW))
    with run_app(python_m_app(port), port, tmp_path / "out.log", env) as running:
        nonces = [uuid.uuid4().hex for _ in range(4)]
        clients = [await connect(f"{running.ws}/ws/echo?nonce={nonce}") for nonce in nonces]
        for client in clients:
            await client.send("hi")
            assert await asyncio.wait_for(client.recv(), 5) == "hi"
        assert http_get(f"{running.http}/readyz")[0] == 200
        scrape_until(running, "closeguard_draining 0.0")

        drain_file.touch()
        started = time.monotonic()
        # Not ready from the moment the file exists; alive all along.
        assert http_get(f"{running.http}/readyz") == (
            503, "application/json", '{"status":"draining"}'
        )  # fmt: skip
        ends = []
        for client in clients:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(client.recv(), DRAIN_WINDOW + 5)
            assert client.protocol.close_rcvd is not None
            ends.append((client.protocol.close_rcvd.code, client.protocol.close_rcvd.reason))
        took = time.monotonic() - started
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{running.ws}/ws/echo", open_timeout=5)
        assert http_get(f"{running.http}/healthz")[0] == 200
        scrape_until(running, "closeguard_draining 1.0")
        records = [close_record(running, nonce) for nonce in nonces]
        # Refused before the app ran, so the service never saw its nonce: found in the log.
        refusal = running.wait_for_log(lambda line: line.get("http_status") == 503)
        before = len(running.close_records("/ws/echo"))
        assert running.stop() == -signal.SIGTERM
        after = running.close_records("/ws/echo")

    assert ends == [(1012, "draining")] * len(clients)
    assert took <= 1.0 + DRAIN_WINDOW + 1.0  # the file noticed within a second, then the window
    response = refused.value.response
    assert (response.status_code, response.headers["Retry-After"]) == (503, "2")
    assert {(r["code"], r["reason"], r["initiator"]) for r in records} == {
        (1012, "draining", "middleware")
    }
    assert (refusal["accepted"], refusal["http_status"], refusal["reason"]) == (
        False, 503, "draining"
    )  # fmt: skip
    # One record per connection, the refused one too, and none more at SIGTERM.
    assert before == len(after) == len(clients) + 1
    assert errors(running.log_lines()) == []
