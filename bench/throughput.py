"""End-to-end echo throughput under uvicorn: bare, the reference and closeguard.

Each server (uvicorn ``--ws websockets-sansio`` and ``--ws wsproto``; bare, behind
``common.Reference`` and behind closeguard) runs in its own process pinned to one core; the
load generator (the ``websockets`` asyncio client: a few connections, each sending a window of
messages and reading the echoes) runs here, pinned to the other core. Rounds interleave the
variants. Compression is off, so the server's per-message work is smallest and closeguard's
share of it largest (the strictest case). Besides messages per second, the server's own CPU
time per message is reported: it shows closeguard's cost even if the client set the pace.

Targets: under ``websockets-sansio`` closeguard >= 0.97 x bare; under ``wsproto``, whose
server saturates, closeguard >= 0.98 x the reference served the same way (the promises' own
per-message work costs more than 2% of a ``wsproto`` echo, however plainly it is written).

Run: ``python -m bench.throughput`` (``--quick`` for the CI smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections.abc import Sequence

from websockets.asyncio.client import ClientConnection, connect

from . import common, servers
from .common import PAYLOADS, Target, paired_ratios

WS_IMPLEMENTATIONS = ("websockets-sansio", "wsproto")
VARIANTS = ("bare", "reference", "closeguard")
#: The judged denominator and the least ratio, per implementation.
TARGETS = {"websockets-sansio": ("bare", 0.97), "wsproto": ("reference", 0.98)}
QUICK_TARGET = 0.75  # a second of load per sample on a shared CI machine: smoke, not verdict
TIMEOUT = 120.0


async def pump(ws: ClientConnection, messages: int, window: int) -> None:
    payloads = itertools.cycle(PAYLOADS.values())
    left = messages
    while left:
        batch = min(window, left)
        for _ in range(batch):
            await ws.send(next(payloads))
        for _ in range(batch):
            await ws.recv()
        left -= batch


async def one_round(
    server: servers.Server, connections: int, messages: int, window: int
) -> tuple[float, float]:
    """Messages per second and server CPU microseconds per message for one sample."""
    sockets = [
        await connect(server.url, compression=None, max_size=None, open_timeout=30)
        for _ in range(connections)
    ]
    try:
        cpu_before = server.cpu_seconds()
        started = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(pump(ws, messages, window) for ws in sockets)), TIMEOUT
        )
        elapsed = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu_before
    finally:
        for ws in sockets:
            await ws.close()
    total = connections * messages
    return total / elapsed, cpu / total * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        rounds, connections, messages, window = 3, 4, 2000, 32
    else:
        rounds, connections, messages, window = 12, 4, 10000, 32
    rounds = args.rounds or rounds
    pinned = common.pin(common.CLIENT_CPU)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [
            (variant, ws, ["--log-file", f"{tmp}/{ws}-{variant}.log"])
            for ws in WS_IMPLEMENTATIONS
            for variant in VARIANTS
        ]
        rate, cpu = asyncio.run(
            servers.interleaved_rounds(
                specs,
                rounds,
                warm_up=lambda server: one_round(server, 1, 200, window),
                sample=lambda server: one_round(server, connections, messages, window),
            )
        )
    rows = []
    targets = []
    for ws in WS_IMPLEMENTATIONS:
        for variant in VARIANTS:
            rows.append(servers.table_row(rate, cpu, ws, variant, ("bare", "reference")))
        against, limit = TARGETS[ws]
        ratio = paired_ratios(rate[ws, "closeguard"], rate[ws, against]).median
        limit = QUICK_TARGET if args.quick else limit
        targets.append(Target(f"throughput {ws}: closeguard / {against}", ratio, limit, "min"))
    settings = (
        f"{rounds} interleaved rounds, each on freshly started servers; per sample "
        f"{connections} connections x {messages} messages (window {window}, payloads "
        f"cycling through {', '.join(PAYLOADS)}), no "
        f"compression; server and client {'pinned to separate cores' if pinned else 'NOT pinned'}"
        f"{'; QUICK mode, lenient threshold' if args.quick else ''}."
    )
    header = ["--ws", "variant", "messages/s", "x bare", "x reference"]
    header += ["server CPU µs/msg", "x bare"]
    header.append("server busy")
    note = (
        "Server busy = messages/s x CPU per message: below ~100% the client, not the server, "
        "set the pace, and the CPU-per-message ratio is the better measure of closeguard's cost "
        "(CPU time comes from /proc in 10 ms ticks)."
    )
    sections = [settings, common.table(header, rows), note]
    return common.finish("End-to-end echo throughput (uvicorn)", sections, targets)


if __name__ == "__main__":
    sys.exit(main())
