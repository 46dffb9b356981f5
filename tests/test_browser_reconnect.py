"""docs/examples/reconnect.js in headless Chromium against the reference service: a page
connected to ``python -m app`` sees the drain's 1012, keeps being refused while that process
drains and while it is down, and reconnects to the process that replaces it on the same port.
Against close policies under uvicorn, it follows the retry contract: back after a 1001
``idle_timeout``, gone after a 1008 ``first_message_timeout``.

One port and two processes in turn, as a pod's clients meet a Service: the draining process
refuses new handshakes (HTTP 503, which the browser reports as 1006), so the page can only come
back once another process serves the address.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from bench.harness import ROOT, free_port
from tests import chromium
from tests.app_support import AppProcess, app_env, chromium_path, http_get, python_m_app, run_app
from tests.policy_app import FIRST
from tests.servers import run_server

SNIPPET = ROOT / "docs" / "examples" / "reconnect.js"
WINDOW = 1.0
#: Short waits for a test; the snippet's defaults (1 s, 30 s) are for browsers in the field.
OPTIONS = "{baseDelay: 200, maxDelay: 1000}"
#: The drain file is noticed within a second, then the window; a margin for a loaded machine.
DRAIN_MS = int((1.0 + WINDOW + 5.0) * 1000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = chromium.launch(playwright, executable)
        yield launched
        launched.close()


def connect_page(page: Page, service: AppProcess) -> None:
    """Load the snippet into the service's own page and open ``/ws/echo`` through it; every
    event goes into ``window.seen``, and each open sends one message to be echoed."""
    page.goto(f"{service.http}/")
    page.add_script_tag(content=SNIPPET.read_text())
    page.evaluate(
        f"""() => {{
            window.seen = [];
            window.echo = reconnectingWebSocket("{service.ws}/ws/echo", {{
                onopen: (event, socket) => {{ seen.push("open"); socket.send("hello"); }},
                onmessage: (event) => seen.push(`message ${{event.data}}`),
                onclose: (event) => seen.push(`close ${{event.code}} ${{event.reason}}`),
            }}, {OPTIONS});
        }}"""
    )


def seen(page: Page) -> list[str]:
    events: list[str] = page.evaluate("() => window.seen")
    return events


def test_the_page_reconnects_after_a_drain_and_a_restart(browser: Browser, tmp_path: Path) -> None:
    port = free_port()
    drain_file = tmp_path / "drain"
    env = app_env(CLOSEGUARD_DRAIN_FILE=str(drain_file), CLOSEGUARD_DRAIN_WINDOW=str(WINDOW))
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        with run_app(python_m_app(port), port, tmp_path / "first.log", env) as first:
            connect_page(page, first)
            page.wait_for_function("() => seen.includes('message hello')", timeout=10_000)

            drain_file.touch()
            page.wait_for_function("() => seen.includes('close 1012 draining')", timeout=DRAIN_MS)
            # The page comes back at once, and the draining process turns it away.
            page.wait_for_function(
                "() => seen.slice(seen.indexOf('close 1012 draining')).includes('close 1006 ')",
                timeout=10_000,
            )
            assert http_get(f"{first.http}/readyz")[0] == 503
            first.stop()
        drained = [line for line in first.log_lines() if line.get("logger") == "closeguard"]

        # The replacement: same address, no drain file.
        os.remove(drain_file)
        with run_app(python_m_app(port), port, tmp_path / "second.log", env) as second:
            page.wait_for_function(
                "() => seen.filter((event) => event === 'message hello').length === 2",
                timeout=15_000,
            )
            events = seen(page)
            page.evaluate("() => echo.close(1000, 'done')")
            page.wait_for_function("() => seen.includes('close 1000 done')", timeout=10_000)
            second.wait_for_log(lambda line: line.get("code") == 1000, timeout=10)
        served = [line for line in second.log_lines() if line.get("logger") == "closeguard"]
    finally:
        context.close()

    assert errors == [], "the page's script failed"
    # Connected, drained with the code it retries, refused meanwhile, connected again.
    assert events[:3] == ["open", "message hello", "close 1012 draining"]
    assert events[-2:] == ["open", "message hello"]
    assert set(events[3:-2]) == {"close 1006 "}
    # The first process: the drain's one record, then one per refused handshake (HTTP 503).
    assert [(r["code"], r["reason"], r["initiator"]) for r in drained[:1]] == [
        (1012, "draining", "middleware")
    ]
    assert drained[1:], "the page's retries while draining left no record"
    assert {(r["accepted"], r["http_status"]) for r in drained[1:]} == {(False, 503)}
    # The second: the reconnected page's connection, ended by the page itself.
    assert [(r["code"], r["reason"], r["initiator"]) for r in served] == [(1000, "done", "client")]


def test_the_page_follows_the_contract_for_close_policies(browser: Browser, tmp_path: Path) -> None:
    """Against close policies under uvicorn: the page comes back after ``idle_timeout`` (1001,
    reconnect now) and stays away after ``first_message_timeout`` (1008, do not retry)."""
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    idle, first = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    try:
        with run_server("uvicorn-websockets-sansio", tmp_path, app="tests.policy_app:app") as app:
            # A page from the same address (the app answers plain HTTP with 404): a page from
            # elsewhere may not open a WebSocket to a loopback address.
            page.goto(app.url.replace("ws://", "http://") + "/")
            page.add_script_tag(content=SNIPPET.read_text())
            page.evaluate(
                f"""() => {{
                    window.seen = {{idle: [], first: []}};
                    window.sockets = {{}};
                    const note = (list) => (e) => list.push(`close ${{e.code}} ${{e.reason}}`);
                    // Idle: says hello once per connection, then nothing: closed each time.
                    sockets.idle = reconnectingWebSocket("{app.url}/idle/{idle}", {{
                        onopen: (event, socket) => {{ seen.idle.push("open"); socket.send("hi"); }},
                        onclose: note(seen.idle),
                    }}, {OPTIONS});
                    // Never speaks first: closed once, and never comes back.
                    sockets.first = reconnectingWebSocket("{app.url}/first/{first}", {{
                        onopen: () => seen.first.push("open"),
                        onclose: note(seen.first),
                    }}, {OPTIONS});
                }}"""
            )
            page.wait_for_function(
                "() => seen.idle.filter((e) => e === 'open').length === 3", timeout=15_000
            )
            # Past the first_message_timeout, its close, and the longest wait a retry would take.
            page.wait_for_timeout(int((FIRST + 2.0) * 1000))
            page.evaluate("() => sockets.idle.close(1000, 'done')")
            page.wait_for_function("() => seen.idle.includes('close 1000 done')", timeout=10_000)
            idle_events: list[str] = page.evaluate("() => seen.idle")
            first_events: list[str] = page.evaluate("() => seen.first")
            idle_records = app.records_for(idle)
            first_records = app.records_for(first)
    finally:
        context.close()

    assert errors == [], "the page's script failed"
    assert idle_events[:4] == ["open", "close 1001 idle_timeout", "open", "close 1001 idle_timeout"]
    assert idle_events[-2:] == ["open", "close 1000 done"]
    assert first_events == ["open", "close 1008 first_message_timeout"]
    assert [(r["code"], r["reason"]) for r in first_records] == [(1008, "first_message_timeout")]
    assert [(r["code"], r["reason"]) for r in idle_records][:2] == [(1001, "idle_timeout")] * 2
