"""Real ASGI servers in their own processes, on 127.0.0.1 at an ephemeral port.

Each server kind is a command line, started and stopped by :mod:`tests.processes`; the wire
tests run unchanged under every kind listed in :data:`SERVERS`. What closeguard logged comes
back through the JSON-lines file that ``tests/wire_app.py`` writes, and what the server itself
printed through its output file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from uvicorn.config import HTTP_PROTOCOLS

from tests.processes import ROOT, free_port, running

APP = "tests.wire_app:app"
#: The same routes with no closeguard in front: what each server does on its own.
BARE_APP = "tests.bare_app:app"

#: A server kind: given a port and an app ("module:attribute"), the command line that serves
#: that app on 127.0.0.1 at that port.
Command = Callable[[int, str], list[str]]


def _uvicorn(ws: str, http: str = "auto") -> Command:
    def command(port: int, app: str) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--ws", ws, "--http", http, "--lifespan", "on", "--log-level", "info",
        ]  # fmt: skip

    return command


def _hypercorn(port: int, app: str) -> list[str]:
    return [
        sys.executable, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}",
        "--log-level", "info", "--error-logfile", "-",
    ]  # fmt: skip


def _daphne(port: int, app: str) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]


def _granian(port: int, app: str) -> list[str]:
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--log-level", "info", app,
    ]  # fmt: skip


SERVERS: dict[str, Command] = {
    "daphne": _daphne,
    "granian": _granian,
    "hypercorn": _hypercorn,
    "uvicorn-websockets": _uvicorn("websockets"),
    "uvicorn-websockets-sansio": _uvicorn("websockets-sansio"),
    "uvicorn-wsproto": _uvicorn("wsproto"),
}

#: uvicorn's new HTTP parser (``--http zttp``), which also takes the WebSocket handshake: the
#: server matrix (tests/test_server_matrix.py) runs it as a server of its own, wherever the
#: installed uvicorn has it.
HTTP_PARSERS: dict[str, Command] = (
    {"uvicorn-websockets-sansio-zttp": _uvicorn("websockets-sansio", "zttp")}
    if "zttp" in HTTP_PROTOCOLS
    else {}
)

#: What a server makes impossible, by name. The wire tests consult this table and nothing else,
#: so every exception to "the client sees the same close whatever the server" is listed here,
#: justified in :data:`LIMIT_REASONS`, and shown on the docs' servers page (docs/servers.md).
LIMITS: dict[str, frozenset[str]] = {
    "daphne": frozenset(
        {
            "drops_reasons",
            "sends_only_1000_and_3000_4999",
            "answers_client_close_with_1000",
            "prints_closeguard_log",
        }
    ),
    "granian": frozenset(
        {"drops_client_reason", "crash_before_accept_is_403", "resets_a_client_still_sending"}
    ),
    "hypercorn": frozenset({"client_close_reaches_app_as_1006"}),
}

LIMIT_REASONS: dict[str, str] = {
    "drops_reasons": "daphne sends only the close code (autobahn's `sendClose(code)`), never "
    "the reason, and gives the app no reason for the client's close.",
    "sends_only_1000_and_3000_4999": "daphne's WebSocket library raises from `send` for any "
    "close code but 1000 and 3000-4999; its only other close is 1011 (no reason) when the app "
    "raises, so closeguard lets that path run and records 1011.",
    "answers_client_close_with_1000": "daphne answers a client's close with 1000 instead of "
    "echoing the client's code.",
    "prints_closeguard_log": "daphne configures the root logger, so closeguard's own log line "
    "(with the traceback, when it swallows the exception) shows in daphne's output too.",
    "drops_client_reason": "granian gives the app the client's close code but not its reason.",
    "crash_before_accept_is_403": "granian answers an app that fails before accept with "
    "HTTP 403, not 500.",
    "resets_a_client_still_sending": "granian drops TCP as the app returns, without waiting "
    "for the client's Close (RFC 6455 section 7.1.1): with the client's unread messages in its "
    "buffer that is a reset, and a client still writing when it lands (the websockets client, "
    "a browser) may drop the Close frame it was sent and report 1006.",
    "client_close_reaches_app_as_1006": "hypercorn answers the client's close correctly on the "
    "wire but tells the app 1006, so the record cannot know the client's code.",
}

#: Seconds a server may take to log what happened on a connection: daphne reaps finished app
#: tasks (and logs their exceptions) from a timer that runs once a second.
OUTPUT_LAG: dict[str, float] = {"daphne": 1.2}


def limited(kind: str, limit: str) -> bool:
    assert limit in LIMIT_REASONS, f"unknown server limit {limit!r}"
    return limit in LIMITS.get(kind, frozenset())


def refuses(kind: str, code: int) -> bool:
    """Whether ``kind`` cannot send close ``code`` at all."""
    return limited(kind, "sends_only_1000_and_3000_4999") and not (
        code == 1000 or 3000 <= code <= 4999
    )


def recorded_close(kind: str, code: int, reason: str) -> tuple[int, str]:
    """The record's code and reason when closeguard hands ``kind`` this valid close."""
    return (1011, "") if refuses(kind, code) else (code, reason)


def wire_close(kind: str, code: int, reason: str) -> tuple[int, str]:
    """What the client receives when closeguard hands ``kind`` this valid close."""
    code, reason = recorded_close(kind, code, reason)
    return (code, "") if limited(kind, "drops_reasons") else (code, reason)


def client_close_reply(kind: str, code: int, reason: str) -> tuple[int, str]:
    """The close frame ``kind`` answers a client's close (code, reason) with."""
    return (1000, "") if limited(kind, "answers_client_close_with_1000") else (code, reason)


def client_close_recorded(kind: str, code: int, reason: str) -> tuple[int, str]:
    """What the app (and so the record) learns of a client's close (code, reason)."""
    if limited(kind, "client_close_reaches_app_as_1006"):
        return (1006, "")
    if limited(kind, "drops_reasons") or limited(kind, "drops_client_reason"):
        return (code, "")
    return (code, reason)


@dataclass
class RunningServer:
    """A server process and the files through which it reports."""

    kind: str
    url: str
    log_path: Path
    output_path: Path
    process: subprocess.Popen[bytes]

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(encoding="utf-8")
        # The server may be writing a line right now: only whole lines count.
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def records_for(
        self, token: str, timeout: float = 5.0, settle: float = 0.2
    ) -> list[dict[str, Any]]:
        """The log records of the connection whose path holds ``token``.

        Waits for the first, then a moment longer, so that a second record would show, and
        so that what the server logs about this connection is in its output before the next.
        """
        return self.records_by_token([token], timeout, settle)[token]

    def records_by_token(
        self, tokens: Sequence[str], timeout: float = 5.0, settle: float = 0.2
    ) -> dict[str, list[dict[str, Any]]]:
        """The log records of each connection whose path holds one of ``tokens``.

        Waits until every token has a record (or ``timeout`` passes), then once a moment
        longer, as :meth:`records_for` does for one.
        """
        settle = max(settle, OUTPUT_LAG.get(self.kind, 0.0))
        deadline = time.monotonic() + timeout
        while True:
            found = self._by_token(tokens)
            if all(found.values()):
                time.sleep(settle)
                return self._by_token(tokens)
            if time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def _by_token(self, tokens: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        lines = self.log_lines()
        return {
            token: [line for line in lines if token in (line.get("path") or "")] for token in tokens
        }

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def run_server(
    kind: str, workdir: Path, env: dict[str, str] | None = None, app: str = APP
) -> Iterator[RunningServer]:
    """Start ``kind`` serving ``app`` (the wire app); stop it (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    name = kind if app == APP else f"{kind}-{app.partition(':')[0].rpartition('.')[2]}"
    log_path = workdir / f"{name}-closeguard.jsonl"
    output_path = workdir / f"{name}-output.log"
    environment = {**os.environ, "CLOSEGUARD_TEST_LOG": str(log_path), "PYTHONPATH": str(ROOT)}
    environment.update(env or {})
    command = {**SERVERS, **HTTP_PARSERS}[kind](port, app)
    with running(command, port, output=output_path, env=environment, what=kind) as process:
        yield RunningServer(kind, f"ws://127.0.0.1:{port}", log_path, output_path, process)


class TokenConnection:
    """One test connection to a running server: a unique token at the end of its path, and the
    record and server output written for it."""

    def __init__(self, server: RunningServer, prefix: str = "") -> None:
        self.server = server
        self.prefix = prefix
        self.token = uuid.uuid4().hex[:12]
        self.output_before = len(server.output())

    def url(self, route: str, **query: str) -> str:
        url = f"{self.server.url}{self.prefix}{route}/{self.token}"
        if query:
            url += "?" + "&".join(f"{k}={quote(v)}" for k, v in query.items())
        return url

    def record(self) -> dict[str, Any]:
        records = self.server.records_for(self.token)
        assert len(records) == 1, f"expected exactly one record, got {records}"
        return records[0]

    def server_output(self) -> str:
        return self.server.output()[self.output_before :]
