"""A drain at scale: N idle connections on one uvicorn worker, drained over the window.

The drain file appears; every client should get 1012 within the window, spread out: the
busiest 100 ms slice of the window closes at most twice its mean share. The server's log must
hold exactly one record per connection. Beside it, the same N connections ended by SIGTERM
without a drain (uvicorn's own 1012, all at once): the worker's CPU and the time each takes.

Run: ``python -m bench.drain`` (10,000 connections, 10 s); ``--quick`` for the CI smoke run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import common, servers
from .common import Target, fmt
from .harness import log_lines

WS = "websockets-sansio"


async def one_run(count: int, window: float, drain: bool, tmp: Path) -> dict[str, float]:
    drain_file, log_file = tmp / f"drain-{drain}", tmp / f"records-{drain}.log"
    extra = ["--log-file", str(log_file)]
    extra += servers.options(drain_file=drain_file, drain_window=window)
    with servers.running([("closeguard", WS, extra)], grace=30) as (server,):
        rss_before = server.rss_bytes()
        clients = list(await servers.open_idle(server.port, count))
        await asyncio.sleep(0.5)
        rss_open = server.rss_bytes()
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        if drain:
            drain_file.touch()
        else:
            server.process.terminate()
        timeout = window + 30 if drain else 30
        arrivals = await servers.close_arrivals(clients, 1012, None, timeout)
        cpu = server.cpu_seconds() - cpu_before
    records = [line for line in log_lines(log_file) if "closed: code=1012" in line]
    times = [at - started for at in arrivals]
    slices = [0] * (int(window / 0.1) + 1)
    first = min(times)
    for at in times:
        slices[min(int((at - first) / 0.1), len(slices) - 1)] += 1
    return {
        "closes": len(times),
        "records": len(records),
        "span": max(times) - first,
        "busiest": max(slices) / (count / len(slices)),
        "cpu": cpu,
        "rss": (rss_open - rss_before) / count,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = common.arguments(__doc__, argv, connections=True)
    count, window = (500, 2.0) if args.quick else (10_000, 10.0)
    count = args.connections or count
    if not servers.enough_descriptors(count):
        return 2
    common.pin(common.CLIENT_CPU)
    with tempfile.TemporaryDirectory() as tmp:
        drained = asyncio.run(one_run(count, window, True, Path(tmp)))
        sigterm = asyncio.run(one_run(count, window, False, Path(tmp)))
    rows = [
        [name, str(run["closes"]), str(run["records"]), fmt(run["span"]) + " s",
         fmt(run["busiest"]), fmt(run["cpu"]) + " s", f"{run['rss']:,.0f} B"]
        for name, run in (("drain", drained), ("SIGTERM, no drain", sigterm))
    ]  # fmt: skip
    header = ["ending", "1012 received", "records", "span", "busiest 100 ms / mean",
              "worker CPU", "RSS per connection"]  # fmt: skip
    settings = (
        f"{count} idle connections on one uvicorn worker (--ws {WS}), drain window {window:g} s, "
        f"records logged at INFO to a file; pid {os.getpid()} is the client."
    )
    targets = [
        Target("drain: clients that got 1012", drained["closes"], count, "min"),
        Target("drain: records (exactly one per connection)", drained["records"], count, "min"),
        Target("drain: records, none twice", drained["records"], count, "max"),
        Target("drain: busiest 100 ms slice / its mean share", drained["busiest"], 2.0, "max"),
    ]
    return common.finish("Drain at scale", [settings, common.table(header, rows)], targets)


if __name__ == "__main__":
    sys.exit(main())
