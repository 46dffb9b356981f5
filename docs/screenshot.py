"""Take docs/explorer.png: the explorer page after one run of every scenario, in Chromium.

    python docs/screenshot.py [--output docs/explorer.png]

It starts the service the way the README does (``python -m app``, default settings) on a free
port on 127.0.0.1, works the page in headless Chromium (Debian's ``chromium``, driven by
playwright, as the browser tests do), saves a full-page PNG, and stops the service.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: (section, {label: value}, button): what a person would try first, one run per scenario.
RUNS: list[tuple[str, dict[str, str], str]] = [
    ("close", {"Code": "1005", "Reason": "no status"}, "Close from the server"),
    ("raise", {}, "Run"),
    ("refuse", {}, "Run"),
    ("return", {}, "Run"),
    ("size", {}, "Send"),  # the default size is the limit plus one byte
    ("client", {"Code": "4321", "Reason": "bye from the page"}, "Close from the browser"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the service did not answer {url} within {timeout} s")


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
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    args = parser.parse_args(argv)
    if not args.chromium:
        raise SystemExit("chromium is not installed: run .ci/setup.d/20-chromium.sh")

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/healthz", process)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            work_the_page(page)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output), full_page=True)
            browser.close()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
