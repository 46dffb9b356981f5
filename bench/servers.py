"""Start benchmark servers in subprocesses, ask them for memory, read their CPU time."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import common

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    variant: str
    ws: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/echo"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (from /proc)."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stats(self) -> dict[str, int | None]:
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=30) as response:
            data: dict[str, int | None] = json.load(response)
        return data


def start(variant: str, ws: str, extra: Sequence[str] = (), timeout: float = 20.0) -> Server:
    command = [sys.executable, "-m", "bench.server", "--variant", variant, "--ws", ws, *extra]
    if common.can_pin():
        command += ["--cpu", str(common.core(common.SERVER_CPU))]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
        if not ready:
            process.kill()
            raise RuntimeError(f"bench server {variant}/{ws} did not start in {timeout}s")
        chunk = os.read(process.stdout.fileno(), 1)
        if not chunk:
            raise RuntimeError(f"bench server {variant}/{ws} exited: {process.wait()}")
        line += chunk
    port = int(line.split()[1])
    time.sleep(0.3)  # uvicorn's startup after the socket is bound
    return Server(variant, ws, process, port)


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@contextlib.contextmanager
def running(specs: Sequence[tuple[str, str, Sequence[str]]]) -> Iterator[list[Server]]:
    """Servers for each (variant, ws, extra arguments), stopped however the block ends."""
    started: list[Server] = []
    try:
        for variant, ws, extra in specs:
            started.append(start(variant, ws, extra))
        yield started
    finally:
        for server in started:
            stop(server)
