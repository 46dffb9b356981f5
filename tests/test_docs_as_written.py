"""The documentation followed literally: each example served the way its page says to serve it
(uvicorn, from a folder holding the example), driven by a real client (the ``websockets``
client, with a browser's Origin where the framework checks it), and checked against the row of
the page's table it illustrates; the testing page's files copied under the names the page gives
them and run by pytest, as a user runs them.

tests/test_docs_examples.py runs the same examples in process, for what only that shows.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import pytest

from closeguard import Initiator
from tests.conftest import Seen, talk
from tests.framework_apps import QUART_PROPAGATES
from tests.processes import ROOT, free_port, running

EXAMPLES = ROOT / "docs" / "examples"
#: The limit each framework example on docs/frameworks.md sets, as its table says.
FRAMEWORKS_LIMIT = 4096


@contextmanager
def uvicorn(app: str, tmp_path: Path) -> Iterator[str]:
    """``uvicorn MODULE:ATTR`` run from docs/examples, as a user runs a file they copied;
    yields the server's base URL (``127.0.0.1``, an ephemeral port)."""
    port = free_port()
    output = tmp_path / "uvicorn.log"
    command = [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--app-dir", str(EXAMPLES),
    ]  # fmt: skip
    with running(command, port, output=output, what=f"uvicorn {app}"):
        yield f"127.0.0.1:{port}"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_starlette_example_as_index_md_says(tmp_path: Path) -> None:
    with uvicorn("starlette_app:app", tmp_path) as host:
        echo = await talk(f"ws://{host}/ws/echo", ("hi",), expect_replies=1, close=(1000, ""))
        over = await talk(f"ws://{host}/ws/echo", ("x" * (64 * 1024 + 1),))
        fail = await talk(f"ws://{host}/ws/fail")
    assert echo == Seen(code=1000, reason="", messages=("hi",))
    assert over.close == (1009, "message exceeds the limit of 65536 bytes")
    assert fail.close == (1011, "internal error")


async def test_fastapi_example_returns_without_closing_and_gets_1000(tmp_path: Path) -> None:
    with uvicorn("fastapi_app:app", tmp_path) as host:
        hello = await talk(f"ws://{host}/ws/hello")
    assert hello == Seen(code=1000, reason="", messages=("hello",))


async def test_raw_asgi_example_in_replace_mode_sends_1000_for_1005(tmp_path: Path) -> None:
    with uvicorn("asgi_app:app", tmp_path) as host:
        seen = await talk(f"ws://{host}/")
    assert seen.code == 1000


@pytest.mark.parametrize(
    ("app", "no_route_status"),
    [
        # docs/frameworks.md, "What the client gets, per framework": the "path with no route"
        # column; the other columns are the same for every framework below.
        ("litestar_app:app", 403),
        ("quart_app:app", 404),
        ("blacksheep_app:app", 403),
        ("channels_app:application", 500),
    ],
)
async def test_framework_example_as_its_table_row_says(
    app: str, no_route_status: int, tmp_path: Path
) -> None:
    with uvicorn(app, tmp_path) as host:
        origin = f"http://{host}"  # what a browser on the site sends; Channels checks it
        ws = f"ws://{host}"
        at_limit = "x" * FRAMEWORKS_LIMIT
        echo = await talk(
            f"{ws}/ws/echo", ("hi", at_limit), expect_replies=2, close=(1000, ""), origin=origin
        )
        over = await talk(f"{ws}/ws/echo", ("x" * (FRAMEWORKS_LIMIT + 1),), origin=origin)
        fail = await talk(f"{ws}/ws/fail", origin=origin)
        nowhere = await talk(f"{ws}/ws/nowhere", origin=origin)
    assert echo == Seen(code=1000, reason="", messages=("hi", at_limit))
    assert over.close == (1009, f"message exceeds the limit of {FRAMEWORKS_LIMIT} bytes")
    if app.startswith("quart") and not QUART_PROPAGATES:  # Quart 0.20 (Python 3.10)
        assert fail.close == (1000, "")
    else:
        assert fail.close == (1011, "internal error")
    assert nowhere.status == no_route_status


async def test_channels_example_serves_browsers_and_refuses_other_origins(
    tmp_path: Path,
) -> None:
    """The settings serve 127.0.0.1 and localhost. The origin check refuses a handshake whose
    Origin names another site, or that has none (docs/frameworks.md says so); Django answers
    HTTP with its 404, not a 500."""
    with uvicorn("channels_app:application", tmp_path) as host:
        port = host.rpartition(":")[2]
        url = f"ws://{host}/ws/echo"
        by_name = await talk(
            url, ("hi",), expect_replies=1, close=(1000, ""), origin=f"http://localhost:{port}"
        )
        elsewhere = await talk(url, origin="http://elsewhere.example")
        no_origin = await talk(url)
        page = http_status(f"http://{host}/")
    assert by_name.messages == ("hi",)
    assert (elsewhere.status, no_origin.status) == (403, 403)
    assert page == 404


async def test_prometheus_example_counts_the_websocket_it_serves(tmp_path: Path) -> None:
    with uvicorn("prometheus_app:app", tmp_path) as host:
        echo = await talk(f"ws://{host}/ws/echo", ("hi",), expect_replies=1, close=(1000, ""))
        counted = 'closeguard_websocket_closes_total{code="1000",initiator="client",policy="none"}'
        lines = []
        deadline = time.monotonic() + 5  # the count follows the client's close by a moment
        while time.monotonic() < deadline:
            lines = http_text(f"http://{host}/metrics").splitlines()
            if f"{counted} 1.0" in lines:
                break
            await asyncio.sleep(0.05)
    assert echo.messages == ("hi",)
    assert f"{counted} 1.0" in lines
    assert "closeguard_websocket_open_connections 0.0" in lines
    # The counter's help names every initiator the page's table lists, as the record has them.
    [help_line] = [
        line for line in lines if line.startswith("# HELP closeguard_websocket_closes_total ")
    ]
    assert all(name in help_line for name in get_args(Initiator)), help_line


async def test_both_metrics_example_counts_a_refused_handshake(tmp_path: Path) -> None:
    with uvicorn("both_metrics_app:app", tmp_path) as host:
        refused = await talk(f"ws://{host}/ws/nowhere")
        lines = http_text(f"http://{host}/metrics").splitlines()
    assert refused.status == 403
    assert (
        'closeguard_websocket_closes_total{code="none",initiator="app",policy="none"} 1.0' in lines
    )


async def test_the_testing_page_app_says_goodbye_under_uvicorn(tmp_path: Path) -> None:
    with uvicorn("chat:app", tmp_path) as host:
        seen = await talk(f"ws://{host}/ws", ("hello", "bye"), expect_replies=1)
    assert seen == Seen(code=1000, reason="goodbye", messages=("hello",))
    log = (tmp_path / "uvicorn.log").read_text()
    assert "ERROR" not in log, log  # a normal close is not an error


async def test_opentelemetry_example_served_with_the_sdk_as_metrics_md_shows(
    tmp_path: Path,
) -> None:
    """``python opentelemetry_serve.py``: the SDK's console exporters print the span with
    closeguard's attributes and the closes counter."""
    port = free_port()
    output = tmp_path / "serve.log"
    command = [sys.executable, str(EXAMPLES / "opentelemetry_serve.py"), str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with running(command, port, output=output, env=env, what="opentelemetry_serve.py"):
        chat = await talk(f"ws://127.0.0.1:{port}/ws/chat")
        deadline = time.monotonic() + 15  # metrics print every 5 s, spans in batches
        while time.monotonic() < deadline:
            text = output.read_text()
            if '"closeguard.websocket.closes"' in text and '"closeguard.close.code"' in text:
                break
            await asyncio.sleep(0.1)
    assert chat == Seen(code=1000, reason="bye", messages=("hello",))
    assert '"closeguard.websocket.closes"' in text, text
    assert re.search(r'"closeguard.close.code": 1000,\s+"closeguard.connection_id"', text), text
    assert '"closeguard.close.reason": "bye"' in text


#: The testing page's files, under the names it gives them, and what pytest reports for them.
TESTING_PAGE_FILES = ("chat.py", "test_chat.py", "test_chat_httpx_ws.py")
TESTING_PAGE_PASSES = 11


def test_the_testing_page_files_pass_under_pytest_as_named(tmp_path: Path) -> None:
    """Copied into an empty folder and run with ``python -m pytest`` there, with no
    configuration of this repository's: every test the page shows is collected and passes."""
    page = (ROOT / "docs" / "testing.md").read_text()
    for name in TESTING_PAGE_FILES:
        assert f"`{name}`" in page, f"docs/testing.md does not name {name}"
        shutil.copy(EXAMPLES / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"\b{TESTING_PAGE_PASSES} passed\b", done.stdout), done.stdout
    assert "skipped" not in done.stdout, done.stdout
