"""The end-to-end benchmarks: echo servers (``bench.echo_server``) started side by side, their
CPU time and memory, many idle connections and the Close frames that end them, interleaved
rounds, and the comparison's report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from . import common, harness
from .common import Figure, Target, fmt_figure, paired_ratios, table
from .rawws import OP_CLOSE, RawClient

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The longest one timed sample may take.
TIMEOUT = 120.0


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

    def rss_bytes(self) -> int:
        """The server process's resident memory now (from /proc)."""
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def traced_bytes(self) -> int:
        """The server's traced Python memory after a full collection (0 without
        ``--tracemalloc``)."""
        url = f"http://127.0.0.1:{self.port}/stats"
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(json.load(response)["traced"] or 0)


async def timed(server: Server, units: int, work: Awaitable[object]) -> tuple[float, float]:
    """Await ``work`` (``units`` of it, at most ``TIMEOUT`` s): units per second and the
    server's CPU microseconds per unit."""
    cpu_before, started = server.cpu_seconds(), time.perf_counter()
    await asyncio.wait_for(work, TIMEOUT)
    elapsed = time.perf_counter() - started
    return units / elapsed, (server.cpu_seconds() - cpu_before) / units * 1e6


def options(**values: object) -> list[str]:
    """``bench.echo_server``'s arguments for these closeguard options."""
    return [arg for name, value in values.items() for arg in ("--option", f"{name}={value}")]


@contextlib.contextmanager
def running(
    specs: Sequence[tuple[str, str, Sequence[str]]], grace: float = 10.0
) -> Iterator[list[Server]]:
    """Servers for each (variant, ws, extra arguments), started side by side, each pinned to
    the server's core, and stopped however the block ends (``grace``: see ``harness.stop``)."""
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
            harness.stop(server.process, grace)


def enough_descriptors(connections: int) -> bool:
    """Lift the file-descriptor limit; False (said on stderr) if ``connections`` + 200 do
    not fit."""
    limit = harness.raise_fd_limit()
    if limit < connections + 200:
        print(f"file-descriptor limit {limit} < {connections} connections + 200", file=sys.stderr)
        return False
    return True


async def open_idle(port: int, count: int, timeout: float = 300.0) -> dict[RawClient, float]:
    """``count`` raw clients done with their handshakes, 200 in flight at a time, each with the
    monotonic time its handshake completed."""
    handshakes = asyncio.Semaphore(200)

    async def one(index: int) -> tuple[RawClient, float]:
        async with handshakes:
            client = await RawClient.connect(port, f"/echo/{index}", timeout=60)
        assert client.opened, f"handshake refused: HTTP {client.wire.status}"
        return client, time.monotonic()

    return dict(await asyncio.wait_for(asyncio.gather(*map(one, range(count))), timeout))


async def close_arrivals(
    clients: Sequence[RawClient], code: int, reason: bytes | None, timeout: float
) -> list[float]:
    """The monotonic time each client's Close frame came, in order; each must carry ``code``
    (and ``reason`` unless None). Each client is dropped once its Close is read."""

    async def one(client: RawClient) -> float:
        while (frame := await client.read_frame()) is not None:
            if frame.opcode == OP_CLOSE:
                arrived = time.monotonic()
                assert frame.close_code == code, frame
                assert reason is None or frame.close_reason == reason, frame
                client.abort()
                return arrived
        raise AssertionError("the server closed TCP without a Close frame")

    return await asyncio.wait_for(asyncio.gather(*map(one, clients)), timeout)


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


#: One judged ratio: under ``--ws`` (first), a variant's rate over a denominator's (the
#: other two) at least this.
Judged = tuple[str, str, str, float]


def compare(
    title: str,
    args: argparse.Namespace,
    variants: Sequence[str],
    judged: Sequence[Judged],
    quick_limit: float,
    warm_up: Sample,
    sample: Sample,
    unit: str,
    settings: str,
) -> int:
    """Run ``variants`` under each implementation named in ``judged``, every variant logging
    at INFO to a file, and report per ``unit``: the rate, its paired ratios, the server CPU
    per unit, and how busy the server was (rate x CPU per unit: near 100% it set the pace,
    below it the client did)."""
    rounds = args.rounds or (4 if args.quick else 12)
    pinned = common.pin(common.CLIENT_CPU)
    implementations = list(dict.fromkeys(ws for ws, _, _, _ in judged))
    with tempfile.TemporaryDirectory() as tmp:
        specs = [
            (variant, ws, ["--log-file", f"{tmp}/{ws}-{variant}.log"])
            for ws in implementations
            for variant in variants
        ]
        rate, cpu = asyncio.run(interleaved_rounds(specs, rounds, warm_up, sample))
    against = list(dict.fromkeys(["bare", *(denominator for _, _, denominator, _ in judged)]))
    rows = []
    for ws in implementations:
        for variant in variants:
            key = (ws, variant)
            busy = Figure([r * us / 1e6 for r, us in zip(rate[key], cpu[key], strict=True)])
            rows.append(
                [
                    ws,
                    variant,
                    fmt_figure(Figure(rate[key])),
                    *(fmt_figure(paired_ratios(rate[key], rate[ws, other])) for other in against),
                    fmt_figure(Figure(cpu[key])),
                    fmt_figure(paired_ratios(cpu[key], cpu[ws, "bare"])),
                    f"{busy.median * 100:.0f}%",
                ]
            )
    targets = [
        Target(
            f"{title} {ws}: {variant} / {denominator}",
            paired_ratios(rate[ws, variant], rate[ws, denominator]).median,
            quick_limit if args.quick else limit,
            "min",
        )
        for ws, variant, denominator, limit in judged
    ]
    header = ["--ws", "variant", f"{unit}s/s", *(f"x {other}" for other in against)]
    header += [f"server CPU µs/{unit}", "x bare", "server busy"]
    settings = (
        f"{rounds} interleaved rounds, each on freshly started servers; {settings}; no "
        f"compression; server and client {'pinned to separate cores' if pinned else 'NOT pinned'}"
        f"{'; QUICK mode, lenient threshold' if args.quick else ''}."
    )
    return common.finish(f"End-to-end {title} (uvicorn)", [settings, table(header, rows)], targets)
