"""Running the reference service as a real process, the way a person or a container does.

Shared by the app, browser, Dockerfile and Prometheus tests (it holds no tests itself). The
process runs from the repository root, as ``app/`` is not installed; its stdout (the JSON log)
goes to a file the test reads back. Also the connections both metrics integrations count
(:func:`end_by_a_policy_and_by_its_words`), under uvicorn in the test's own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from bench.harness import log_lines, running, stop
from closeguard import CloseRecord, WebSocketCloseMiddleware
from tests import chromium
from tests.conftest import serve, talk

#: The venv's own bin directory first, so ``uvicorn`` in a command is this venv's.
BIN_DIR = str(Path(sys.executable).parent)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """Status, content type and body of a GET; HTTP errors are answers, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode()
            return response.status, response.headers.get("content-type", ""), body
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("content-type", ""), error.read().decode()


@dataclass
class AppProcess:
    """A running service: its base URLs, its process, and its log so far."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every whole stdout line so far, each of which must be one JSON object."""
        return [json.loads(line) for line in log_lines(self.log_path) if line.strip()]

    def close_records(self, path: str) -> list[dict[str, Any]]:
        """closeguard's records of the connections to ``path`` so far."""
        return [
            line
            for line in self.log_lines()
            if line.get("logger") == "closeguard" and line["path"] == path
        ]

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if predicate(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no such log line within {timeout} s:\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as a container runtime sends; the exit status."""
        status = stop(self.process, grace=timeout)
        assert status != -signal.SIGKILL, f"the service did not stop within {timeout} s"
        return status


#: uvicorn before 0.55 (what pip installs on Python 3.10) logs "ASGI callable returned without
#: completing handshake." at ERROR under websockets-sansio after an app's HTTP denial response,
#: though the response went out whole (docs/servers.md): a drain's or a cap's 503, there.
UVICORN_DENIAL_FALSE_ALARM = "ASGI callable returned without completing handshake."
UVICORN_BEFORE_0_55 = tuple(int(part) for part in version("uvicorn").split(".")[:2]) < (0, 55)


def errors(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log lines at ERROR or above, less uvicorn 0.54's false alarm after a denial."""
    return [
        line
        for line in lines
        if line["level"] in ("ERROR", "CRITICAL")
        and not (UVICORN_BEFORE_0_55 and line.get("message") == UVICORN_DENIAL_FALSE_ALARM)
    ]


def app_env(**overrides: str) -> dict[str, str]:
    """This environment without any CLOSEGUARD_ / PROMETHEUS_ setting, plus ``overrides``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLOSEGUARD_", "PROMETHEUS_"))
    }
    env["PATH"] = BIN_DIR + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def healthy(url: str) -> bool:
    """Whether the service at ``url`` answers ``/healthz`` with 200 (its readiness check)."""
    try:
        return http_get(f"{url}/healthz", timeout=1)[0] == 200
    except OSError:
        return False


@contextmanager
def run_app(
    command: Sequence[str], port: int, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[AppProcess]:
    """Start ``command`` in the repository root, wait for ``/healthz``, stop it at the end.

    ``/healthz``, not just an open port: with ``--workers`` the parent listens before any
    worker can answer.
    """
    url = f"http://127.0.0.1:{port}"
    with running(
        command,
        port,
        output=log_path,
        env=env if env is not None else app_env(),
        grace=15,
        ready=lambda: healthy(url),
        what="the service",
    ) as process:
        yield AppProcess(process, port, log_path)


def python_m_app(port: int) -> list[str]:
    return [sys.executable, "-m", "app", "--port", str(port)]


def chromium_path() -> str:
    """Debian's chromium; missing is a failure in CI (``CI`` set) and a skip elsewhere."""
    path = chromium.executable()
    if path is None:
        message = "chromium is not installed (.ci/setup.d/20-chromium.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


async def end_by_a_policy_and_by_its_words(on_close: Callable[[CloseRecord], None]) -> None:
    """Four connections under uvicorn, each handed to ``on_close``, ending with close policies'
    words: closeguard's own idle_timeout close (1001, on ``/idle``) and first_message_timeout
    close (1008, on ``/first``), each after 0.3 s; the app's close with a policy's words (4000
    'idle_timeout', its first message's deadline still pending); and a client's close with
    another policy's (1001 'rate_limited'). Only the first two are a policy's closes: a
    metric's policy never carries text closeguard did not write."""

    async def hold(websocket: WebSocket) -> None:
        await websocket.accept()
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    async def pretend(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(4000, "idle_timeout")

    app = WebSocketCloseMiddleware(
        Starlette(
            routes=[
                WebSocketRoute("/idle", hold),
                WebSocketRoute("/first", hold),
                WebSocketRoute("/quiet", hold),
                WebSocketRoute("/pretend", pretend),
            ]
        ),
        idle_timeout=lambda scope: 0.3 if scope["path"] == "/idle" else None,
        first_message_timeout=lambda scope: None if scope["path"] == "/idle" else 0.3,
        on_close=on_close,
    )
    with serve(app, "websockets-sansio") as url:
        assert (await talk(f"{url}/idle")).close == (1001, "idle_timeout")
        assert (await talk(f"{url}/first")).close == (1008, "first_message_timeout")
        assert (await talk(f"{url}/pretend")).close == (4000, "idle_timeout")
        async with connect(f"{url}/quiet") as ws:
            await ws.close(1001, "rate_limited")
