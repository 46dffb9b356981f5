"""Connection churn under uvicorn: connect, accept, close cycles per second, bare and closeguard.

The client opens a connection, waits for the handshake (the app has accepted), sends a Close
frame with 1000, reads the server's Close frame and waits for the server to end TCP; the echo
app sees the disconnect and returns. The client is ``bench.rawws``'s: a full client library
costs more per handshake than uvicorn does, and would set the pace instead of the server.
closeguard logs one record per connection at INFO to a file, as a deployed service would.
Servers run in their own processes pinned to one core, the client here on the other; rounds
interleave the variants.

Target: closeguard >= 0.88 x "bare+fields line" cycles per second, per WebSocket
implementation: a structured record per connection is the product, and the bare app writing
one line that carries a record's fields to the same kind of file is the least code that leaves
one. "bare" and "closeguard-quiet" (its records off) are shown beside it.

Run: ``python -m bench.churn`` (``--quick`` for the CI smoke run).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from . import common, servers
from .rawws import RawClient

WS_IMPLEMENTATIONS = ("websockets-sansio", "wsproto")
VARIANTS = ("bare", "bare+fields line", "closeguard", "closeguard-quiet")
BASELINE = "bare+fields line"
TARGET = 0.88
#: A quick sample is a fraction of a second on a shared CI machine, and its ratios move by
#: 10% or more: the smoke run catches a gross regression (a second record per connection, a
#: blocking call), not a few per cent.
QUICK_TARGET = 0.6
#: Cycles each fresh server runs before it is measured.
WARM_UP_CYCLES = 200


async def cycle(port: int) -> None:
    client = await RawClient.connect(port, "/echo", timeout=None)  # the round is bounded
    try:
        if not client.opened:
            raise RuntimeError(f"handshake refused: HTTP {client.wire.status}")
        await client.send_close(1000)
        frame = await client.read_frame()
        if frame is None or frame.close_code != 1000:
            raise RuntimeError(f"expected Close 1000, got {frame!r}")
        await client.read_frame()  # None: the server ends TCP after the closing handshake
    finally:
        client.abort()


async def cycles(port: int, count: int) -> None:
    for _ in range(count):
        await cycle(port)


async def one_round(server: servers.Server, workers: int, per_worker: int) -> tuple[float, float]:
    """Cycles per second and server CPU microseconds per cycle for one sample."""
    work = asyncio.gather(*(cycles(server.port, per_worker) for _ in range(workers)))
    return await servers.timed(server, workers * per_worker, work)


def main(argv: Sequence[str] | None = None) -> int:
    args = common.arguments(__doc__, argv)
    workers, per_worker = (8, 30) if args.quick else (8, 200)
    return servers.compare(
        "churn",
        args,
        VARIANTS,
        [(ws, "closeguard", BASELINE, TARGET) for ws in WS_IMPLEMENTATIONS],
        QUICK_TARGET,
        warm_up=lambda server: one_round(server, 2, WARM_UP_CYCLES // 2),
        sample=lambda server: one_round(server, workers, per_worker),
        unit="cycle",
        settings=f"per sample {workers} concurrent clients x {per_worker} connect/accept/close "
        f"cycles",
    )


if __name__ == "__main__":
    sys.exit(main())
