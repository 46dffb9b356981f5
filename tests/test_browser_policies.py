"""The explorer's close policies in headless Chromium, against the reference service.

The service runs as ``python -m app`` under a real uvicorn on 127.0.0.1 (an ephemeral port);
the page connects to each policy's route through docs/examples/reconnect.js, the retry
contract's browser snippet, served by the service as it is. For each policy: the close code and
reason the page received, the server's record, and the page's retry decision (reconnect.js's,
and what it then did), each checked against ``closeguard.RETRY_CONTRACT``.

Every policy runs at once (each on its own route), so the module waits about as long as the
slowest one, ``max_lifetime``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from websockets.asyncio.client import connect

from app.policies import DEMOS, Demo
from bench.harness import ROOT, free_port
from closeguard import RETRY_CONTRACT, CloseCode, CloseContract, RetryAdvice
from closeguard.policies import OVER_CAPACITY, POLICY_CLOSES
from tests import chromium
from tests.app_support import AppProcess, app_env, chromium_path, http_get, python_m_app, run_app

SNIPPET = ROOT / "docs" / "examples" / "reconnect.js"
#: From the click to every panel shown: the slowest run is max_lifetime's (4 s), then a retry
#: (up to 1 s); a cap's retries back off for a few seconds at most. A margin for a busy machine.
RUNS_TIMEOUT_MS = 30_000
#: The page's words for what a client does, by the contract's advice.
DECISION = {
    RetryAdvice.RECONNECT: "reconnect",
    RetryAdvice.BACK_OFF: "back off",
    RetryAdvice.DO_NOT_RETRY: "stop",
}
Shown = dict[str, str]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    port = free_port()
    log: Path = tmp_path_factory.mktemp("browser-policies") / "stdout.log"
    with run_app(python_m_app(port), port, log, app_env()) as running:
        yield running


@pytest.fixture(scope="module")
def shown(service: AppProcess) -> dict[str, Shown]:
    """Run every policy's section of the page at once; what each shows, by demo name."""
    executable = chromium_path()
    errors: list[str] = []
    results: dict[str, Shown] = {}
    with sync_playwright() as playwright:
        browser = chromium.launch(playwright, executable)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{service.http}/")
            for demo in DEMOS:
                section = page.locator(f"section#policy-{demo.name}")
                section.get_by_role("button", name="Run", exact=True).click()
            for demo in DEMOS:
                result = page.locator(f"section#policy-{demo.name} .result[data-state=done]")
                result.wait_for(timeout=RUNS_TIMEOUT_MS)
                results[demo.name] = {
                    str(element.get_attribute("data-field")): element.inner_text()
                    for element in result.locator("[data-field]").all()
                }
        finally:
            browser.close()
    assert errors == [], "the page's script failed"
    return results


def contract_row(code: int | None, http_status: int | None, reason: str) -> CloseContract:
    [row] = [
        row
        for row in RETRY_CONTRACT
        if (row.code, row.http_status, row.reason) == (code, http_status, reason)
    ]
    return row


def refused(demo: Demo) -> bool:
    """A cap: under uvicorn the handshake is refused with HTTP 503, which a browser sees as 1006."""
    return demo.reason == OVER_CAPACITY


@pytest.mark.parametrize("demo", DEMOS, ids=[demo.name for demo in DEMOS])
def test_the_page_shows_the_policys_close(
    demo: Demo, shown: dict[str, Shown], service: AppProcess
) -> None:
    fields = shown[demo.name]
    # What the service logged for this route: the record, and any error of the server's.
    logged = [
        line
        for line in service.log_text().splitlines()
        if demo.path in line or '"level": "ERROR"' in line
    ]
    if refused(demo):
        expected = ("1006", "(empty)", "false")
        server = {"server.http_status": "503", "server.reason": demo.reason}
    else:
        code = POLICY_CLOSES[demo.reason]
        expected = (str(int(code)), demo.reason, "true")
        server = {"server.code": str(int(code)), "server.reason": demo.reason}
    browser = (fields["browser.code"], fields["browser.reason"], fields["browser.wasClean"])
    assert browser == expected, (fields, logged)
    assert {key: fields.get(key) for key in server} == server, fields
    assert fields["server.initiator"] == "middleware"
    assert fields["browser.opened"] == str(not refused(demo)).lower()


@pytest.mark.parametrize("demo", DEMOS, ids=[demo.name for demo in DEMOS])
def test_the_pages_retry_decision_follows_the_contract(demo: Demo, shown: dict[str, Shown]) -> None:
    fields = shown[demo.name]
    if refused(demo):
        row = contract_row(None, 503, demo.reason)
    else:
        row = contract_row(POLICY_CLOSES[demo.reason], None, demo.reason)
    assert fields["retry.advice"] == row.advice.value
    assert fields["retry.decision"] == DECISION[row.advice]
    # reconnect.js acted on it: a new connection after a retried close, none after a final one.
    assert fields["retry.came_back"] == ("no" if row.advice is RetryAdvice.DO_NOT_RETRY else "yes")
    assert fields["retry.agrees"] == "yes", fields


@pytest.mark.parametrize(
    "demo", [demo for demo in DEMOS if demo.option.endswith(("_timeout", "_lifetime"))]
)
def test_a_deadline_closes_at_its_time(demo: Demo, shown: dict[str, Shown]) -> None:
    """The record's duration: the deadline (max_lifetime: up to a tenth earlier), not later
    than a second past it."""
    duration = shown[demo.name]["server.duration"]
    match = re.fullmatch(r"([0-9.]+) ms", duration)
    assert match, duration
    earliest = 0.9 if demo.option == "max_lifetime" else 1.0
    assert demo.value * earliest <= float(match.group(1)) / 1000 < demo.value + 1.0


def test_the_page_runs_the_docs_snippet_as_it_is(service: AppProcess) -> None:
    status, content_type, body = http_get(f"{service.http}/reconnect.js")
    assert (status, content_type) == (200, "text/javascript; charset=utf-8")
    assert body == SNIPPET.read_text()


async def test_the_rest_of_the_service_has_no_policy(service: AppProcess) -> None:
    """Past every deadline, over every rate and cap, ``/ws/echo`` still answers."""
    longest = max(demo.value for demo in DEMOS if demo.option.endswith(("timeout", "lifetime")))
    flood = int(max(demo.value for demo in DEMOS if demo.option == "max_messages_per_second"))
    cap = int(max(demo.value for demo in DEMOS if demo.option.startswith("max_connections")))
    async with connect(f"{service.ws}/ws/echo") as first:
        others = [await connect(f"{service.ws}/ws/echo") for _ in range(cap)]
        await asyncio.sleep(longest + 0.5)
        for index in range(2 * flood):
            await first.send(f"message {index}")
        assert [await first.recv() for _ in range(2 * flood)][-1] == f"message {2 * flood - 1}"
        for other in others:
            await other.send("still here")
            assert await other.recv() == "still here"
            await other.close()
    assert first.close_code == CloseCode.NORMAL_CLOSURE
