"""A drain at scale: N idle connections on one uvicorn worker, drained over the window.

The drain file appears; every client should get 1012 within the window, spread out: the
busiest 100 ms slice of the window closes at most twice its mean share. The server's log must
hold exactly one record per connection. Beside it, the same N connections ended by SIGTERM
without a drain (uvicorn's own 1012, all at once): the worker's CPU and the time each takes.

Run: ``python -m bench.drain`` (10,000 connections, 10 s); ``--quick`` for the CI smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import common, harness, servers
from .common import Target, fmt
from .rawws import OP_CLOSE, RawClient

WS = "websockets-sansio"
TIMEOUT = 300.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def open_idle(port: int, count: int) -> list[RawClient]:
    handshakes = asyncio.Semaphore(200)

    async def one(index: int) -> RawClient:
        async with handshakes:
            return await RawClient.connect(port, f"/echo/{index}", timeout=60)

    clients = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), TIMEOUT)
    assert all(client.opened for client in clients), "a handshake failed"
    return clients


async def close_times(clients: list[RawClient], started: float, timeout: float) -> list[float]:
    """Seconds from ``started`` to each client's Close frame; the code of each must be 1012."""

    async def one(client: RawClient) -> float:
        while (frame := await client.read_frame()) is not None:
            if frame.opcode == OP_CLOSE:
                arrived = time.monotonic() - started
                assert frame.close_code == 1012, frame
                client.abort()
                return arrived
        raise AssertionError("the server closed TCP without a Close frame")

    return await asyncio.wait_for(asyncio.gather(*(one(c) for c in clients)), timeout)


async def one_run(count: int, window: float, drain: bool, tmp: Path) -> dict[str, float]:
    port = harness.free_port()
    drain_file, log_file = tmp / f"drain-{drain}", tmp / f"records-{drain}.log"
    command = [sys.executable, "-m", "bench.echo_server", "--port", str(port)]
    command += ["--variant", "closeguard", "--ws", WS, "--log-file", str(log_file)]
    command += ["--option", f"drain_file={drain_file}", "--option", f"drain_window={window}"]
    process = harness.start(command)
    server = servers.Server("closeguard", WS, process, port)
    try:
        harness.wait_until(process, lambda: harness.listening(port), what="the drain server")
        rss_before = rss_bytes(process.pid)
        clients = await open_idle(port, count)
        await asyncio.sleep(0.5)
        rss_open = rss_bytes(process.pid)
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        if drain:
            drain_file.touch()
        else:
            process.terminate()
        times = await close_times(clients, started, window + 30 if drain else 30)
        cpu = server.cpu_seconds() - cpu_before
    finally:
        harness.stop(process, grace=30)
    records = [line for line in harness.log_lines(log_file) if "closed: code=1012" in line]
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.add_common_arguments(parser)
    parser.add_argument("--connections", type=int, default=None)
    args = parser.parse_args(argv)
    count, window = (500, 2.0) if args.quick else (10_000, 10.0)
    count = args.connections or count
    if harness.raise_fd_limit() < count + 200:
        print(f"the file-descriptor limit is below {count} connections + 200", file=sys.stderr)
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
