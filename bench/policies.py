"""Close policies at scale: deadlines over many idle connections, and a flood beside calm clients.

Deadlines: N idle connections on one uvicorn worker with ``idle_timeout`` T and ``max_lifetime``
2T, beside the bare app holding as many. Per connection: resident memory and traced Python
memory closeguard adds; the worker's CPU while every connection idles (no timer may wake per
connection before its deadline); then each close's lateness past its idle deadline (at most 1 s
allowed), every one 1001 ``idle_timeout``, and one record each.

Flood: F clients each send 1,000 messages a second (until closed) against ``max_messages_per_second
= 50``, beside C clients sending 5 a second: every flooder is closed with 1008 ``rate_limited``,
no calm client is touched.

Run: ``python -m bench.policies`` (10,000 connections, T = 10 s); ``--quick`` for the CI smoke run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import common, servers
from .common import Target, fmt
from .harness import log_lines
from .rawws import OP_TEXT, RawClient, client_frame

WS = "websockets-sansio"
RATE = 50


async def deadlines(
    count: int, idle: float, tmp: Path, traced: bool
) -> dict[str, dict[str, float]]:
    """Each variant's figures per connection. Traced, the resident memory includes
    tracemalloc's own: the memory figures come from a run each way."""
    figures: dict[str, dict[str, float]] = {}
    for variant in ("bare", "closeguard"):
        log_file = tmp / f"{variant}-{traced}.log"
        extra = ["--log-file", str(log_file), *(["--tracemalloc"] if traced else [])]
        if variant == "closeguard":
            extra += servers.options(idle_timeout=idle, max_lifetime=2 * idle)
        with servers.running([(variant, WS, extra)], grace=30) as (server,):
            before, traced_before = server.rss_bytes(), server.traced_bytes()
            opening = time.monotonic()
            opened = await servers.open_idle(server.port, count)
            rss, traced_open = server.rss_bytes(), server.traced_bytes()
            cpu, quiet_from = server.cpu_seconds(), time.monotonic()
            await asyncio.sleep(max(0.5, opening + idle - time.monotonic() - 0.5))
            idle_cpu = (server.cpu_seconds() - cpu) / (time.monotonic() - quiet_from)
            late = [0.0]
            if variant == "closeguard":
                # Each connection's deadline is its own: the last handshake ends seconds
                # after the first.
                reason = b"idle_timeout"
                arrivals = await servers.close_arrivals(list(opened), 1001, reason, idle + 30)
                starts = opened.values()
                late = [at - start - idle for at, start in zip(arrivals, starts, strict=True)]
            for client in opened:
                client.abort()
        records = [line for line in log_lines(log_file) if "reason='idle_timeout'" in line]
        figures[variant] = {
            "rss": (rss - before) / count,
            "traced": (traced_open - traced_before) / count,
            "idle_cpu": idle_cpu,
            "late": max(late),
            "records": len(records),
        }
    return figures


async def flood(flooders: int, calm: int, tmp: Path) -> tuple[int, int]:
    """How many flooders got 1008 ``rate_limited``, how many calm clients stayed open."""
    extra = ["--log-file", str(tmp / "flood.log"), *servers.options(max_messages_per_second=RATE)]
    burst = b"".join(client_frame(OP_TEXT, b"flood") for _ in range(10))
    with servers.running([("closeguard", WS, extra)], grace=30) as (server,):
        clients = list(await servers.open_idle(server.port, flooders + calm))

        async def flooding(client: RawClient) -> bool:
            reader = asyncio.ensure_future(client.read_to_end(timeout=10))
            for _ in range(2000):  # 1,000 a second until closed (the reader waits 10 s)
                if reader.done():
                    break
                client.writer.write(burst)
                await asyncio.sleep(0.01)
            wire = await reader
            return wire.close == (1008, "rate_limited")

        async def calming(client: RawClient) -> bool:
            for n in range(10):  # 5 a second, for 2 s
                await client.send_text(str(n))
                frame = await asyncio.wait_for(client.read_frame(), 5)
                if frame is None or frame.opcode != OP_TEXT:
                    return False
                await asyncio.sleep(0.2)
            return True

        results = await asyncio.gather(
            *(flooding(c) for c in clients[:flooders]), *(calming(c) for c in clients[flooders:])
        )
        for client in clients:
            client.abort()
    return sum(results[:flooders]), sum(results[flooders:])


def main(argv: Sequence[str] | None = None) -> int:
    args = common.arguments(__doc__, argv, connections=True)
    count, idle, flooders, calm = (500, 2.0, 10, 5) if args.quick else (10_000, 10.0, 100, 20)
    count = args.connections or count
    if not servers.enough_descriptors(count):
        return 2
    common.pin(common.CLIENT_CPU)
    with tempfile.TemporaryDirectory() as tmp:
        measured = asyncio.run(deadlines(count, idle, Path(tmp), traced=False))
        traced = asyncio.run(deadlines(count, idle, Path(tmp), traced=True))
        for variant, figures in traced.items():
            measured[variant]["traced"] = figures["traced"]
        flooded, calm_kept = asyncio.run(flood(flooders, calm, Path(tmp)))
    bare, guarded = measured["bare"], measured["closeguard"]
    rows = [
        [name, f"{run['rss']:,.0f} B", f"{run['traced']:,.0f} B", f"{run['idle_cpu']:.1%}"]
        for name, run in (("bare", bare), ("closeguard + idle_timeout, max_lifetime", guarded))
    ]
    header = ["variant", "RSS per connection", "traced per connection", "worker CPU while idle"]
    settings = (
        f"{count} idle connections on one uvicorn worker (--ws {WS}), idle_timeout {idle:g} s, "
        f"max_lifetime {2 * idle:g} s. Flood: {flooders} clients at 1,000 messages/s against "
        f"max_messages_per_second={RATE}, beside {calm} clients at 5/s."
    )
    # Resident memory over a few hundred connections is mostly the allocator's noise: it is
    # judged in the full run only (the traced figure is exact either way).
    targets = (
        []
        if args.quick
        else [
            Target(
                "deadlines: RSS closeguard adds per connection (B)",
                guarded["rss"] - bare["rss"],
                2560,
                "max",
            ),
        ]
    )
    targets += [
        Target("deadlines: traced bytes closeguard adds per connection",
               guarded["traced"] - bare["traced"], 2560, "max"),
        Target("deadlines: latest close past its deadline (s)", guarded["late"], 1.0, "max"),
        Target("deadlines: records, one per connection", guarded["records"], count, "min"),
        Target("flood: flooders closed with 1008 rate_limited", flooded, flooders, "min"),
        Target("flood: calm clients untouched", calm_kept, calm, "min"),
    ]  # fmt: skip
    sections = [settings, common.table(header, rows), f"Latest close: {fmt(guarded['late'])} s."]
    return common.finish("Close policies at scale", sections, targets)


if __name__ == "__main__":
    sys.exit(main())
