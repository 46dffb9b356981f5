"""End-to-end echo throughput under uvicorn: bare, the reference and closeguard.

Each server (uvicorn ``--ws websockets-sansio`` and ``--ws wsproto``; bare, behind
``common.Reference``, behind closeguard, and behind closeguard with every close policy on and
none reached, ``common.EVERY_POLICY``) runs in its own process pinned to one core; the
load generator (the ``websockets`` asyncio client: a few connections, each sending a window of
messages and reading the echoes) runs here, pinned to the other core. Rounds interleave the
variants. Compression is off, so the server's per-message work is smallest and closeguard's
share of it largest (the strictest case). Besides messages per second, the server's own CPU
time per message is reported: it shows closeguard's cost even if the client set the pace.

Targets: under ``websockets-sansio`` closeguard >= 0.97 x bare, and so closeguard with every
policy (issue 21); under ``wsproto``, whose server is saturated and where the promises'
per-message work costs a few per cent however plainly it is written, closeguard >= 0.98 x the
reference served the same way (closeguard with every policy is shown there).

Run: ``python -m bench.throughput`` (``--quick`` for the CI smoke run).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Sequence

from websockets.asyncio.client import ClientConnection, connect

from . import common, servers
from .common import PAYLOADS

VARIANTS = ("bare", "reference", "closeguard", "closeguard+policies")
#: Per implementation, the judged variant, its denominator and the least ratio.
TARGETS = [
    ("websockets-sansio", "closeguard", "bare", 0.97),
    ("websockets-sansio", "closeguard+policies", "bare", 0.97),
    ("wsproto", "closeguard", "reference", 0.98),
]
QUICK_TARGET = 0.75  # a second of load per sample on a shared CI machine: smoke, not verdict


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
        work = asyncio.gather(*(pump(ws, messages, window) for ws in sockets))
        return await servers.timed(server, connections * messages, work)
    finally:
        for ws in sockets:
            await ws.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = common.arguments(__doc__, argv)
    connections, messages, window = (4, 2000, 32) if args.quick else (4, 10000, 32)
    return servers.compare(
        "throughput",
        args,
        VARIANTS,
        TARGETS,
        QUICK_TARGET,
        warm_up=lambda server: one_round(server, 1, 200, window),
        sample=lambda server: one_round(server, connections, messages, window),
        unit="message",
        settings=f"per sample {connections} connections x {messages} messages (window "
        f"{window}, payloads cycling through {', '.join(PAYLOADS)})",
    )


if __name__ == "__main__":
    sys.exit(main())
