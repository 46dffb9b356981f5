"""Memory per open connection under uvicorn: what closeguard adds to each idle connection.

Servers (bare and closeguard, ``--ws websockets-sansio``) run in their own processes with
``tracemalloc`` on. Each sample opens N idle connections with the raw client (handshake done,
the app waiting in ``receive``), asks the server for its traced Python memory after a full
garbage collection (``GET /stats``), drops them, and asks again. Per connection = (open -
closed) / N; closeguard's share is its figure minus bare's in the same round. tracemalloc sees
every Python allocation (closeguard's state, closures, the copied scope).

Target: closeguard adds <= 2 KiB per connection (tracemalloc).

Run: ``python -m bench.memory`` (``--quick`` for the CI smoke run).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
from collections.abc import Sequence

from . import common, servers
from .common import Figure, Target, fmt_figure

VARIANTS = ("bare", "closeguard")
WS = "websockets-sansio"
TARGET_BYTES = 2048


async def one_round(server: servers.Server, count: int) -> float:
    """Traced bytes per open connection for one sample."""
    clients = await servers.open_idle(server.port, count)
    await asyncio.sleep(0.2)  # the last accepts reach the app's receive
    opened = await asyncio.to_thread(server.traced_bytes)
    for client in clients:
        client.abort()
    await asyncio.sleep(0.5)  # the server sees every connection end
    closed = await asyncio.to_thread(server.traced_bytes)
    return (opened - closed) / count


async def measure(running: list[servers.Server], rounds: int, count: int) -> dict[str, list[float]]:
    traced: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    by_variant = {server.variant: server for server in running}
    for server in running:  # warm-up: first-use allocations (caches, free lists) happen here
        await one_round(server, min(count, 200))
    for round_number in range(rounds):
        order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            traced[variant].append(await one_round(by_variant[variant], count))
    return traced


def main(argv: Sequence[str] | None = None) -> int:
    args = common.arguments(__doc__, argv, connections=True)
    rounds, count = (3, 300) if args.quick else (5, 1000)
    rounds = args.rounds or rounds
    count = args.connections or count
    if not servers.enough_descriptors(count):
        return 2
    pinned = common.pin(common.CLIENT_CPU)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [
            (variant, WS, ["--tracemalloc", "--log-file", f"{tmp}/{variant}.log"])
            for variant in VARIANTS
        ]
        with servers.running(specs) as running:
            traced = asyncio.run(measure(running, rounds, count))
    added = Figure([c - b for c, b in zip(traced["closeguard"], traced["bare"], strict=True)])
    rows = [[variant, fmt_figure(Figure(traced[variant]))] for variant in VARIANTS]
    rows.append(["closeguard - bare", fmt_figure(added)])
    settings = (
        f"{rounds} interleaved rounds of {count} idle connections per variant, uvicorn "
        f"--ws {WS}, no compression; soft fd limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]};"
        f" server and client {'pinned to separate cores' if pinned else 'NOT pinned'}"
        f"{'; QUICK mode (fewer connections, same threshold)' if args.quick else ''}."
    )
    header = ["variant", "traced bytes/connection"]
    sections = [settings, common.table(header, rows)]
    targets = [
        Target("memory: bytes closeguard adds per connection", added.median, TARGET_BYTES, "max")
    ]
    return common.finish("Memory per idle connection (uvicorn)", sections, targets)


if __name__ == "__main__":
    sys.exit(main())
