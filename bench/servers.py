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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from tests import processes

from . import common
from .common import Figure, fmt, fmt_figure, paired_ratios

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


def launch(variant: str, ws: str, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bench.server", "--variant", variant, "--ws", ws, *extra]
    if common.can_pin():
        command += ["--cpu", str(common.core(common.SERVER_CPU))]
    # One hash seed for every server: string hashes set dict layouts, and with them a few
    # per cent of speed that would otherwise differ from process to process, not by variant.
    return processes.start(
        command, output=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "0"}
    )


def ready(process: subprocess.Popen[bytes], variant: str, ws: str, timeout: float = 20.0) -> Server:
    """Read the server's ``PORT <n>`` line (it binds its own port), then wait until uvicorn
    listens on it."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
        if not readable:
            processes.stop(process)
            raise RuntimeError(f"bench server {variant}/{ws} did not start in {timeout}s")
        chunk = os.read(process.stdout.fileno(), 1)
        if not chunk:
            raise RuntimeError(f"bench server {variant}/{ws} exited: {process.wait()}")
        line += chunk
    port = int(line.split()[1])
    processes.wait_until(
        process,
        lambda: processes.listening(port),
        timeout=max(deadline - time.monotonic(), 0.0),
        what=f"bench server {variant}/{ws}",
    )
    return Server(variant, ws, process, port)


def stop(server: Server) -> None:
    processes.stop(server.process)


@contextlib.contextmanager
def running(specs: Sequence[tuple[str, str, Sequence[str]]]) -> Iterator[list[Server]]:
    """Servers for each (variant, ws, extra arguments), started side by side and stopped
    however the block ends."""
    launched: list[tuple[subprocess.Popen[bytes], str, str]] = []
    started: list[Server] = []
    try:
        for variant, ws, extra in specs:
            launched.append((launch(variant, ws, extra), variant, ws))
        for process, variant, ws in launched:
            started.append(ready(process, variant, ws))
        yield started
    finally:
        for process, variant, ws in launched:
            stop(Server(variant, ws, process, 0))


#: One sample of a server: (per second, server CPU microseconds per unit).
Sample = Callable[[Server], Awaitable[tuple[float, float]]]
Samples = dict[tuple[str, str], list[float]]


async def interleaved_rounds(
    specs: Sequence[tuple[str, str, Sequence[str]]],
    rounds: int,
    warm_up: Sample,
    sample: Sample,
) -> tuple[Samples, Samples]:
    """Rates and CPU per unit by (ws, variant): one sample of each server per round.

    Every round starts its servers afresh: two processes of the same code differ by up to
    10% in speed (measured: four bare servers side by side, 350-384 µs per churn cycle), so
    a server kept for the whole run would lend its variant its own luck. The order of the
    variants rotates from round to round.
    """
    rate: Samples = {}
    cpu: Samples = {}
    variants = list(dict.fromkeys(variant for variant, _, _ in specs))
    for round_number in range(rounds):
        shift = round_number % len(variants)
        order = variants[shift:] + variants[:shift]
        with running(specs) as started:
            by_key = {(server.ws, server.variant): server for server in started}
            for server in started:
                await warm_up(server)
            for ws in dict.fromkeys(ws for _, ws, _ in specs):
                for variant in order:
                    per_second, cpu_us = await sample(by_key[ws, variant])
                    rate.setdefault((ws, variant), []).append(per_second)
                    cpu.setdefault((ws, variant), []).append(cpu_us)
    return rate, cpu


def table_row(
    rate: Samples, cpu: Samples, ws: str, variant: str, against: Sequence[str]
) -> list[str]:
    """One row of an end-to-end table: the rate, its paired ratio to each variant in
    ``against`` (the first is the baseline), the server CPU per unit and its ratio to the
    baseline, and how busy the server was (rate x CPU per unit: near 100% it set the pace)."""
    key = (ws, variant)
    busy = Figure(
        [per_second * us / 1e6 for per_second, us in zip(rate[key], cpu[key], strict=True)]
    )
    return [
        ws,
        variant,
        fmt_figure(Figure(rate[key])),
        *(fmt(paired_ratios(rate[key], rate[ws, other]).median) for other in against),
        fmt_figure(Figure(cpu[key])),
        fmt(paired_ratios(cpu[key], cpu[ws, against[0]]).median),
        f"{busy.median * 100:.0f}%",
    ]
