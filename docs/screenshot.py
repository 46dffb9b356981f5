"""Take docs/explorer.png: the explorer page after one run of every scenario, in Chromium.

    python docs/screenshot.py [--output docs/explorer.png]

It starts the service the way the README does (``python -m app``, default settings) on a free
port on 127.0.0.1, works the page in headless Chromium (Debian's ``chromium``, driven by
playwright, as the browser tests do), saves a full-page PNG, and stops the service.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))

from tests import chromium  # noqa: E402  (the browser tests' launch, flags included)
from tests.processes import free_port, running  # noqa: E402

#: (section, {label: value}, button): what a person would try first, one run per scenario.
RUNS: list[tuple[str, dict[str, str], str]] = [
    ("close", {"Code": "1005", "Reason": "no status"}, "Close from the server"),
    ("raise", {}, "Run"),
    ("refuse", {}, "Run"),
    ("return", {}, "Run"),
    ("size", {}, "Send"),  # the default size is the limit plus one byte
    ("client", {"Code": "4321", "Reason": "bye from the page"}, "Close from the browser"),
]


def work_the_page(page: Page) -> None:
    for section, fields, button in RUNS:
        scenario = page.locator(f"section#{section}")
        for label, value in fields.items():
            scenario.get_by_label(label, exact=True).fill(value)
        scenario.get_by_role("button", name=button, exact=True).click()
        scenario.locator(".result[data-state=done]").wait_for(timeout=15_000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "explorer.png")
    parser.add_argument("--chromium", default=chromium.executable())
    args = parser.parse_args(argv)
    if not args.chromium:
        raise SystemExit("chromium is not installed: run .ci/setup.d/20-chromium.sh")

    port = free_port()
    command = [sys.executable, "-m", "app", "--port", str(port)]
    with (
        running(command, port, output=subprocess.DEVNULL, grace=15, what="the service"),
        sync_playwright() as playwright,
    ):
        browser = chromium.launch(playwright, args.chromium)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        work_the_page(page)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output), full_page=True)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
