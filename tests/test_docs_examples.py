"""Every code example the documentation shows (docs/examples/*.py) runs and does what its
page says: each app is served in process with Starlette's TestClient. The pages carry each
example's code as it is in its file (so GitHub shows it too); tests/test_docs_as_written.py
serves the same examples under uvicorn and runs the testing page's files with pytest."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asgi_app
import blacksheep_app
import both_metrics_app
import channels_app
import fastapi_app
import litestar_app
import opentelemetry_app
import per_route_limit
import prometheus_app
import pytest
import quart_app
import starlette_app
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from closeguard import options
from tests.conftest import Seen, talk
from tests.framework_apps import QUART_PROPAGATES
from tests.processes import free_port, running

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
#: A code block that shows a file: ```python title="starlette_app.py" (a file of docs/examples)
#: or title="deploy/gunicorn.conf.py" (a path from the repository's root).
SHOWN_FILE = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.S | re.M)


def test_every_example_is_tested() -> None:
    """Imported here or in tests/test_retry_contract.py, or served or run by name in
    tests/test_docs_as_written.py."""
    here = Path(__file__).read_text() + (ROOT / "tests" / "test_retry_contract.py").read_text()
    as_written = (ROOT / "tests" / "test_docs_as_written.py").read_text()
    names = {path.stem for path in EXAMPLES.glob("*.py")}
    assert names, EXAMPLES
    untested = {
        name
        for name in names
        if f"import {name}\n" not in here and f"from {name} import " not in here
        if f'"{name}:' not in as_written
        if f'"{name}.py"' not in as_written
    }
    assert untested == set()


def shown_files() -> list[tuple[str, str, str]]:
    """(page, title, code) of each code block that shows a file, on every page but the
    performance page (another part of the repository keeps that one)."""
    return [
        (page.name, title, code)
        for page in sorted((ROOT / "docs").glob("*.md"))
        if page.name != "performance.md"
        for title, code in SHOWN_FILE.findall(page.read_text())
    ]


def test_every_page_shows_its_files_as_they_are() -> None:
    """GitHub renders the pages' Markdown, not snippet includes: each page carries its files'
    code, and this keeps every copy equal to its file. To mend a failure, paste the file's
    current text into the block."""
    shown = shown_files()
    assert shown
    for page, title, code in shown:
        path = ROOT / title if "/" in title else EXAMPLES / title
        assert path.is_file(), f"docs/{page}: no file {title}"
        assert code == path.read_text(), f"docs/{page}: the block titled {title} differs"
    examples = {path.name for path in EXAMPLES.glob("*.py")}
    assert examples - {title for _, title, _ in shown} == set()


def test_no_page_includes_a_snippet_github_would_show_as_a_bare_line() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name == "performance.md":
            continue
        includes = [line for line in page.read_text().splitlines() if line.startswith("--8<--")]
        assert includes == [], f"docs/{page.name}"


def test_starlette_echoes_and_an_exception_is_1011() -> None:
    with (
        TestClient(starlette_app.app) as client,
        client.websocket_connect("/ws/echo") as websocket,
    ):
        websocket.send_text("hi")
        assert websocket.receive_text() == "hi"
    with (
        TestClient(starlette_app.app) as client,
        pytest.raises(RuntimeError, match="a bug"),
        client.websocket_connect("/ws/fail") as websocket,
    ):
        websocket.receive_text()


def test_fastapi_return_without_close_is_1000_and_one_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fastapi_app.closed.clear()
    caplog.set_level(logging.INFO, logger="closeguard")
    with TestClient(fastapi_app.app) as client, client.websocket_connect("/ws/hello") as ws:
        assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDisconnect) as ended:
            ws.receive_text()
    assert ended.value.code == 1000
    [record] = fastapi_app.closed
    assert (record.code, record.initiator, record.path) == (1000, "middleware", "/ws/hello")
    assert record.messages_sent == 1
    assert [r.name for r in caplog.records] == ["closeguard"]


def test_raw_asgi_app_in_replace_mode_gets_1000_for_1005() -> None:
    client = TestClient(asgi_app.app)  # no `with`: the raw app answers no lifespan events
    with client.websocket_connect("/") as websocket, pytest.raises(WebSocketDisconnect) as ended:
        websocket.receive_text()
    assert ended.value.code == 1000


def test_per_route_limit() -> None:
    limit = per_route_limit.limit_for
    assert limit({"type": "websocket", "path": "/ws/upload/1"}) == 8 * 1024 * 1024
    assert limit({"type": "websocket", "path": "/ws/raw"}) is None
    assert limit({"type": "websocket", "path": "/ws/chat"}) == 64 * 1024
    guarded = per_route_limit.guard(starlette_app.app)
    assert options.limit_for(guarded.max_message_size, {"path": "/ws/chat"}) == 64 * 1024


def test_prometheus_counts_a_refused_handshake() -> None:
    with TestClient(prometheus_app.app) as client:
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws/nowhere"):
            pass
        response = client.get("/metrics")
    assert response.status_code == 200
    assert (
        'closeguard_websocket_closes_total{code="none",initiator="app",policy="none"} 1.0'
        in response.text
    )


def with_global_otel_sdk(module: str) -> dict[str, Any]:
    """What the SDK got from the example, set up as the app's global providers (in a process of
    its own: see tests/otel_example_run.py)."""
    command = [sys.executable, "-m", "tests.otel_example_run", module]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_opentelemetry_counts_the_close_and_puts_it_on_the_server_span() -> None:
    # With no SDK set up (this process), every OpenTelemetry call is a no-op: the app works.
    with (
        TestClient(opentelemetry_app.app) as client,
        client.websocket_connect("/ws/chat") as websocket,
    ):
        assert websocket.receive_text() == "hello"
        assert websocket.receive() == {"type": "websocket.close", "code": 1000, "reason": "bye"}

    got = with_global_otel_sdk("opentelemetry_app")
    assert got["messages"] == ["hello"]
    assert got["close"] == {"type": "websocket.close", "code": 1000, "reason": "bye"}
    closes = {"closeguard.close.code": 1000, "closeguard.initiator": "app"}
    assert ["closeguard.websocket.closes", closes, 1] in got["points"]
    assert ["closeguard.websocket.connections.open", {}, 0] in got["points"]
    [span] = got["span_attributes"]
    connection_id = span.pop("closeguard.connection_id")
    assert re.fullmatch("[0-9a-f]{32}", connection_id)
    assert span == {**closes, "closeguard.close.reason": "bye"}


def test_prometheus_and_opentelemetry_both_count_a_refused_handshake() -> None:
    refused = 'closeguard_websocket_closes_total{code="none",initiator="app",policy="none"} 1.0'
    with TestClient(both_metrics_app.app) as client:  # no OpenTelemetry SDK in this process
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws/nowhere"):
            pass
        assert refused in client.get("/metrics").text.splitlines()

    got = with_global_otel_sdk("both_metrics_app")
    assert "refused" in got
    assert refused in got["metrics_text"].splitlines()
    assert ["closeguard.websocket.closes", {"closeguard.initiator": "app"}, 1] in got["points"]
    [span] = got["span_attributes"]
    assert span["closeguard.initiator"] == "app"
    assert "closeguard.close.code" not in span


def test_the_readme_minimal_example_gives_1011_and_one_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The README's example (the package index shows it, so it cannot include a file) runs."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    [example] = [block for block in blocks if "Starlette(" in block]
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    client = TestClient(namespace["app"])  # type: ignore[arg-type]
    with (
        pytest.raises(RuntimeError, match="a bug"),
        client.websocket_connect("/ws/fail") as websocket,
    ):
        websocket.receive_text()
    [record] = [r for r in caplog.records if r.name == "closeguard"]
    assert record.getMessage().startswith(
        "websocket /ws/fail closed: code=1011 reason='internal error' initiator=middleware"
    )


def closes_recorded(caplog: pytest.LogCaptureFixture) -> list[tuple[Any, ...]]:
    """(code, reason, initiator, exception) of each close record logged so far."""
    fields = ("code", "reason", "initiator", "exception")
    return [
        tuple(getattr(r, field) for field in fields)
        for r in caplog.records
        if r.name == "closeguard"
    ]


def test_litestar_exception_reaches_closeguard(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="closeguard")
    with TestClient(litestar_app.app) as client:
        with client.websocket_connect("/ws/echo") as websocket:
            websocket.send_text("hi")
            assert websocket.receive_text() == "hi"
        with (
            pytest.raises(RuntimeError, match="a bug"),
            client.websocket_connect("/ws/fail") as websocket,
        ):
            websocket.receive_text()
    assert closes_recorded(caplog) == [
        (1000, "", "client", None),
        (1011, "internal error", "middleware", "RuntimeError"),
    ]


async def test_quart_exception_reaches_closeguard(tmp_path: Path) -> None:
    """Under uvicorn: Starlette's TestClient cancels Quart's WebSocket task when the client
    leaves (without closeguard too), and Quart's own test client hangs on an ExceptionGroup."""
    port = free_port()
    output = tmp_path / "uvicorn.log"
    command = [
        sys.executable, "-m", "uvicorn", f"{quart_app.__name__}:app", "--host", "127.0.0.1",
        "--port", str(port), "--app-dir", str(EXAMPLES),
    ]  # fmt: skip
    with running(command, port, output=output, what="uvicorn with quart_app"):
        url = f"ws://127.0.0.1:{port}"
        echo = await talk(f"{url}/ws/echo", ("hi",), expect_replies=1, close=(1000, ""))
        fail = await talk(f"{url}/ws/fail")
    assert echo == Seen(code=1000, reason="", messages=("hi",))
    if QUART_PROPAGATES:
        assert fail.close == (1011, "internal error")
        assert "RuntimeError: a bug" in output.read_text()
    else:  # Quart 0.20, Python 3.10: its own 1000 (docs/frameworks.md)
        assert fail.close == (1000, "")


def test_channels_exception_and_a_refused_origin_are_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="closeguard")
    # No `with`: Channels answers no lifespan events.
    client = TestClient(channels_app.application)  # type: ignore[arg-type]
    origin = {"origin": "http://localhost"}  # a host of its ALLOWED_HOSTS, as a browser sends
    with client.websocket_connect("/ws/echo", headers=origin) as websocket:
        websocket.send_text("hi")
        assert websocket.receive_text() == "hi"
    with (
        pytest.raises(RuntimeError, match="a bug"),
        client.websocket_connect("/ws/fail", headers=origin) as websocket,
    ):
        websocket.receive_text()
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/ws/echo", headers={"origin": "http://elsewhere.example"}),
    ):
        pass
    assert closes_recorded(caplog) == [
        (1000, "", "client", None),
        (1011, "internal error", "middleware", "RuntimeError"),
        (None, "", "app", None),  # the origin check refused the handshake
    ]
    assert [getattr(r, "http_status", None) for r in caplog.records][-1] == 403


def test_blacksheep_exception_text_stays_off_the_wire(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="closeguard")
    with TestClient(blacksheep_app.app) as client:
        with client.websocket_connect("/ws/echo") as websocket:
            websocket.send_text("hi")
            assert websocket.receive_text() == "hi"
        with (
            client.websocket_connect("/ws/fail") as websocket,
            pytest.raises(WebSocketDisconnect) as ended,
        ):
            websocket.receive_text()
    assert (ended.value.code, ended.value.reason) == (1011, "internal error")
    # BlackSheep sent 1011 with the exception's text: the record keeps it, for the operator.
    [record] = [r.__dict__ for r in caplog.records if getattr(r, "code", None) == 1011]
    assert (record["initiator"], record["requested_code"]) == ("app", 1011)
    assert "a bug, with a secret in its text" in record["violation"]
