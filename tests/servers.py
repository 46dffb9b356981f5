"""Real ASGI servers in their own processes, on 127.0.0.1 at an ephemeral port.

Each server kind is a command line; the wire tests run unchanged under every kind listed in
:data:`SERVERS`. What closeguard logged comes back through the JSON-lines file that
``tests/wire_app.py`` writes, and what the server itself printed through its output file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = "tests.wire_app:app"

#: A server kind: given a port, the command line that serves APP on 127.0.0.1 at that port.
Command = Callable[[int], list[str]]


def _uvicorn(ws: str) -> Command:
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
            "--ws", ws, "--lifespan", "off", "--log-level", "info",
        ]  # fmt: skip

    return command


SERVERS: dict[str, Command] = {
    "uvicorn-websockets": _uvicorn("websockets"),
    "uvicorn-websockets-sansio": _uvicorn("websockets-sansio"),
    "uvicorn-wsproto": _uvicorn("wsproto"),
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def records_for(
        self, token: str, timeout: float = 5.0, settle: float = 0.2
    ) -> list[dict[str, Any]]:
        """The log records of the connection whose path holds ``token``.

        Waits for the first, then a moment longer, so that a second record would show.
        """
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [line for line in self.log_lines() if token in (line.get("path") or "")]
            if found:
                time.sleep(settle)
                return [line for line in self.log_lines() if token in (line.get("path") or "")]
            time.sleep(0.02)
        return found

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} within {timeout} s")


@contextmanager
def run_server(
    kind: str, workdir: Path, env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    """Start ``kind`` serving the wire app; stop it (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    log_path = workdir / f"{kind}-closeguard.jsonl"
    output_path = workdir / f"{kind}-output.log"
    environment = {**os.environ, "CLOSEGUARD_TEST_LOG": str(log_path), "PYTHONPATH": str(ROOT)}
    environment.update(env or {})
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            SERVERS[kind](port), cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_listening(port, process, timeout=20)
        yield RunningServer(kind, f"ws://127.0.0.1:{port}", log_path, output_path, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
