"""The end-to-end benchmarks' echo servers (``bench.echo_server``), started side by side for each
round: their CPU time, their memory, the interleaved rounds and a table row."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from . import common, harness
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


@contextlib.contextmanager
def running(specs: Sequence[tuple[str, str, Sequence[str]]]) -> Iterator[list[Server]]:
    """Servers for each (variant, ws, extra arguments), started side by side and stopped
    however the block ends."""
    cpu = ["--cpu", str(common.core(common.SERVER_CPU))] if common.can_pin() else []
    # One hash seed for every server: string hashes set dict layouts, and with them a few
    # per cent of speed that would otherwise differ from process to process, not by variant.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    started: list[Server] = []
    try:
        for variant, ws, extra in specs:
            port = harness.free_port()
            command = [sys.executable, "-m", "bench.echo_server", "--port", str(port)]
            command += ["--variant", variant, "--ws", ws, *cpu, *extra]
            started.append(Server(variant, ws, harness.start(command, env=env), port))
        for server in started:
            up = functools.partial(harness.listening, server.port)
            harness.wait_until(server.process, up, what=f"bench server {server.variant}")
        yield started
    finally:
        for server in started:
            harness.stop(server.process)


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
