"""Connection churn under uvicorn: connect, accept, close cycles per second, bare and closeguard.

The client opens a connection, waits for the handshake (the app has accepted), sends a Close
frame with 1000, reads the server's Close frame and waits for the server to end TCP; the echo
app sees the disconnect and returns. The client speaks the few bytes of RFC 6455 this needs
itself: a full client library costs more per handshake than uvicorn does, and would set the
pace instead of the server. closeguard logs one record per connection at INFO to a file, as a
deployed service would. Servers run in their own processes pinned to one core, the client
here on the other; rounds interleave the variants.

Target: closeguard >= 0.95 x "bare+log line" cycles per second, per WebSocket implementation:
the bare app writing one plain log line per connection to the same kind of file is the least
code that leaves a line per connection, so what closeguard costs beyond it is its own.

Run: ``python -m bench.churn`` (``--quick`` for the CI smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence

from . import common, servers
from .common import Target, paired_ratios

WS_IMPLEMENTATIONS = ("websockets-sansio", "wsproto")
#: "bare+log line" (the bare app writes a plain ``logger.info`` line of the same length per
#: connection to the same kind of file handler) is the judged denominator; "bare",
#: "bare+fields line" (that line with a record's sixteen fields as ``extra``, as closeguard's
#: carries them) and "closeguard-quiet" (closeguard with its records off) are shown, to tell
#: the line's cost, the fields' and closeguard's own work apart.
VARIANTS = ("bare", "bare+log line", "bare+fields line", "closeguard", "closeguard-quiet")
BASELINE = "bare+log line"
TARGET = 0.95
#: A quick sample is a fraction of a second on a shared CI machine, and its ratios move by
#: 10% or more: the smoke run catches a gross regression (a second record per connection, a
#: blocking call), not a few per cent.
QUICK_TARGET = 0.65
TIMEOUT = 120.0
#: Cycles each fresh server runs before it is measured.
WARM_UP_CYCLES = 200


HANDSHAKE = (
    b"GET /echo HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)
MASK = b"\x37\xfa\x21\x3d"
#: FIN + Close, masked, 2-byte payload: code 1000 (a client must mask, RFC 6455 5.3).
CLOSE_1000 = b"\x88\x82" + MASK + bytes(b ^ m for b, m in zip(b"\x03\xe8", MASK, strict=False))


async def cycle(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(HANDSHAKE)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head[:40]!r}")
        writer.write(CLOSE_1000)
        frame = await reader.readexactly(2)
        payload = await reader.readexactly(frame[1] & 0x7F)
        if frame[0] != 0x88 or payload[:2] != b"\x03\xe8":
            raise RuntimeError(f"expected Close 1000, got {frame + payload!r}")
        await reader.read()  # the server ends TCP after the closing handshake
    finally:
        writer.close()
        await writer.wait_closed()


async def cycles(port: int, count: int) -> None:
    for _ in range(count):
        await cycle(port)


async def one_round(server: servers.Server, workers: int, per_worker: int) -> tuple[float, float]:
    """Cycles per second and server CPU microseconds per cycle for one sample."""
    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(cycles(server.port, per_worker) for _ in range(workers))), TIMEOUT
    )
    elapsed = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu_before
    total = workers * per_worker
    return total / elapsed, cpu / total * 1e6


def count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as log:
        return sum(1 for _ in log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        rounds, workers, per_worker = 4, 8, 30
    else:
        rounds, workers, per_worker = 12, 8, 200
    rounds = args.rounds or rounds
    pinned = common.pin(common.CLIENT_CPU)
    with tempfile.TemporaryDirectory() as tmp:
        specs = [
            (variant, ws, [] if variant == "bare" else ["--log-file", f"{tmp}/{ws}-{variant}.log"])
            for ws in WS_IMPLEMENTATIONS
            for variant in VARIANTS
        ]
        rate, cpu = asyncio.run(
            servers.interleaved_rounds(
                specs,
                rounds,
                warm_up=lambda server: one_round(server, 2, WARM_UP_CYCLES // 2),
                sample=lambda server: one_round(server, workers, per_worker),
            )
        )
        logged = {ws: count_lines(f"{tmp}/{ws}-closeguard.log") for ws in WS_IMPLEMENTATIONS}
    limit = QUICK_TARGET if args.quick else TARGET
    rows = []
    targets = []
    for ws in WS_IMPLEMENTATIONS:
        for variant in VARIANTS:
            rows.append(servers.table_row(rate, cpu, ws, variant, (BASELINE, "bare")))
        ratio = paired_ratios(rate[ws, "closeguard"], rate[ws, BASELINE])
        targets.append(Target(f"churn {ws}: closeguard / {BASELINE}", ratio.median, limit, "min"))
    settings = (
        f"{rounds} interleaved rounds; per sample {workers} concurrent clients x {per_worker} "
        f"connect/accept/close cycles, no compression; closeguard logged "
        + ", ".join(f"{n} records ({ws})" for ws, n in logged.items())
        + f" for {rounds * (workers * per_worker + WARM_UP_CYCLES)} connections (warm-up "
        f"included), each round on freshly started servers; server and client "
        f"{'pinned to separate cores' if pinned else 'NOT pinned'}"
        f"{'; QUICK mode, lenient threshold' if args.quick else ''}."
    )
    header = ["--ws", "variant", "cycles/s", f"x {BASELINE}", "x bare"]
    header += ["server CPU µs/cycle", f"x {BASELINE}"]
    header.append("server busy")
    sections = [settings, common.table(header, rows)]
    return common.finish("Connection churn (uvicorn)", sections, targets)


if __name__ == "__main__":
    sys.exit(main())
