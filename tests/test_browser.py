"""The explorer page in headless Chromium, worked as a person would: fill, click, read.

The service runs as ``python -m app`` under a real uvicorn on 127.0.0.1; Chromium is Debian's
(``.ci/setup.d/20-chromium.sh``), driven by playwright. Without it these tests fail in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from bench.harness import free_port
from tests import chromium
from tests.app_support import (
    AppProcess,
    app_env,
    chromium_path,
    python_m_app,
    run_app,
)

LIMIT = 1024
#: How long a scenario may take from the click to both panels shown (it takes about 0.1 s).
SCENARIO_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    port = free_port()
    log: Path = tmp_path_factory.mktemp("browser") / "stdout.log"
    env = app_env(CLOSEGUARD_MAX_MESSAGE_SIZE=str(LIMIT))
    with run_app(python_m_app(port), port, log, env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = chromium.launch(playwright, executable)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, service: AppProcess) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"{service.http}/")
    yield opened
    context.close()
    assert errors == [], "the page's script failed"


def run(page: Page, section: str, button: str, **fields: str) -> dict[str, str]:
    """Fill the section's fields by their labels, click the button, read every shown value."""
    scenario = page.locator(f"section#{section}")
    for label, value in fields.items():
        scenario.get_by_label(label.replace("_", " "), exact=True).fill(value)
    scenario.get_by_role("button", name=button, exact=True).click()
    result = scenario.locator(".result[data-state=done]")
    result.wait_for(timeout=SCENARIO_TIMEOUT_MS)
    shown = {}
    for element in result.locator("[data-field]").all():
        field = element.get_attribute("data-field")
        assert field is not None
        shown[field] = element.inner_text()
    return shown


def test_the_page_shows_the_limit_and_the_named_codes(page: Page) -> None:
    size = page.locator("section#size")
    assert size.locator("[data-field=limit]").inner_text() == str(LIMIT)
    assert size.get_by_label("Size in bytes").input_value() == str(LIMIT + 1)
    rows = page.locator("#codes tbody tr")
    assert rows.count() == 15
    assert rows.filter(has_text="1005").inner_text().split("\t") == [
        "1005",
        "No Status Rcvd",
        "no: reported locally only",
    ]


def test_1000_is_clean(page: Page) -> None:
    shown = run(page, "close", "Close from the server", Code="1000", Reason="done")
    assert shown["browser.code"] == "1000"
    assert shown["browser.meaning"] == "1000 Normal Closure (defined by the standard)"
    assert shown["browser.reason"] == "done"
    assert shown["browser.wasClean"] == "true"
    assert (shown["server.code"], shown["server.initiator"]) == ("1000", "app")
    assert shown["server.accepted"] == "true"


def test_4000_arrives_with_its_reason(page: Page) -> None:
    shown = run(page, "close", "Close from the server", Code="4000", Reason="custom app reason")
    assert (shown["browser.code"], shown["browser.reason"]) == ("4000", "custom app reason")
    assert shown["browser.meaning"] == "4000 (private use)"
    assert shown["browser.wasClean"] == "true"
    assert (shown["server.code"], shown["server.reason"]) == ("4000", "custom app reason")


def test_an_invalid_1005_ends_as_1011(page: Page) -> None:
    shown = run(page, "close", "Close from the server", Code="1005", Reason="no status")
    assert shown["browser.code"] == "1011"
    assert shown["browser.reason"] == "internal error"
    assert shown["browser.wasClean"] == "true"
    assert shown["server.code"] == "1011"
    assert shown["server.requested_code"] == "1005"
    assert "1005 is reserved for local use" in shown["server.violation"]
    assert shown["server.exception"] == "closeguard.codes.InvalidCloseCode"
    assert shown["server.initiator"] == "middleware"


def test_a_preset_fills_the_fields(page: Page) -> None:
    page.locator("section#close").get_by_role("button", name="5000 (invalid)").click()
    shown = run(page, "close", "Close from the server")
    assert (shown["browser.code"], shown["server.requested_code"]) == ("1011", "5000")


def test_an_exception_ends_as_1011_with_wasclean_true(page: Page) -> None:
    shown = run(page, "raise", "Run")
    assert shown["browser.code"] == "1011"
    assert shown["browser.meaning"] == "1011 Internal Error (defined by the standard)"
    assert shown["browser.reason"] == "internal error"
    assert shown["browser.wasClean"] == "true"  # uvicorn alone: 1006 and false
    assert (shown["server.code"], shown["server.exception"]) == ("1011", "RuntimeError")


def test_a_close_before_accept_is_a_refused_handshake(page: Page) -> None:
    shown = run(page, "refuse", "Run")
    assert (shown["browser.code"], shown["browser.wasClean"]) == ("1006", "false")
    assert (shown["browser.opened"], shown["browser.error"]) == ("false", "true")
    assert shown["server.accepted"] == "false"
    assert shown["server.http_status"] == "403"
    assert shown["server.code"] == "none"


def test_a_return_without_close_gets_1000_from_the_middleware(page: Page) -> None:
    shown = run(page, "return", "Run")
    assert (shown["browser.code"], shown["browser.wasClean"]) == ("1000", "true")
    assert (shown["server.code"], shown["server.initiator"]) == ("1000", "middleware")


def test_an_oversized_message_ends_as_1009(page: Page) -> None:
    shown = run(page, "size", "Send", Size_in_bytes="2000")
    assert shown["browser.code"] == "1009"
    assert shown["browser.reason"] == f"message exceeds the limit of {LIMIT} bytes"
    assert shown["browser.wasClean"] == "true"
    assert shown["browser.messages"] == "0"
    assert (shown["server.code"], shown["server.initiator"]) == ("1009", "middleware")


def test_a_message_within_the_limit_comes_back(page: Page) -> None:
    shown = run(page, "size", "Send", Size_in_bytes=str(LIMIT))
    assert shown["browser.messages"] == "1"
    assert f"the echo came back: {LIMIT} bytes" in shown["browser.notes"]
    assert (shown["browser.code"], shown["server.initiator"]) == ("1000", "client")
    assert shown["server.messages"] == "1 / 1"


def test_a_browser_close_with_4321_is_recorded_as_the_clients(page: Page) -> None:
    shown = run(page, "client", "Close from the browser", Code="4321", Reason="bye from the page")
    assert (shown["browser.code"], shown["browser.reason"]) == ("4321", "bye from the page")
    assert shown["browser.wasClean"] == "true"
    assert shown["server.initiator"] == "client"
    assert shown["server.code"] == "4321"
    assert shown["server.reason"] == "bye from the page"
    assert shown["server.meaning"] == "4321 (private use)"


def test_the_browser_refuses_a_code_a_page_may_not_send(page: Page) -> None:
    shown = run(page, "client", "Close from the browser", Code="1001", Reason="")
    assert "ws.close(1001) threw InvalidAccessError" in shown["browser.notes"]
    assert (shown["browser.code"], shown["server.code"]) == ("1000", "1000")
    assert shown["server.initiator"] == "client"
