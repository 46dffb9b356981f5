"""Capacity of one uvicorn worker: N concurrent idle connections, bare and closeguard.

What a capacity planner asks: how much memory does each open WebSocket hold, how fast can a
worker take new ones, what CPU does each cost, and does a deploy (SIGTERM) still leave one
record per connection when thousands are open. ``bench.memory`` answers the first in Python
bytes (tracemalloc) at 1,000 connections; this answers it in resident memory (VmRSS, what a
container's memory limit counts) at 10,000, with the allocator's and the kernel's share in it.

Each sample starts a fresh server (``bench.server``, pinned to one core; closeguard logs its
records at INFO to a file, as churn's does), opens and closes a few warm-up connections (their
first-use allocations are not any one connection's), reads the server's VmRSS and CPU time
(``/proc/<pid>/status`` and ``/proc/<pid>/stat``), opens N connections at most
``--concurrency`` at a time, waits until the server is idle, reads both again, and sends
SIGTERM. uvicorn's graceful shutdown sends every open connection 1012; the sample ends when the
process has exited (the time from SIGTERM is the shutdown time) and every client has seen its
Close frame. Then the closeguard log must hold exactly N records with code 1012 (and the
warm-up's 1000s, one id each, nothing else): anything else is a product bug, and the script
exits 1, keeps the log and says where.

The client is this process, pinned to the other core: asyncio protocols speaking the few bytes
of RFC 6455 an idle connection needs (the handshake, a Pong for each Ping, the Close), because
a client library costs more per handshake than the server and would set the pace. Measured,
it spends about a third of the server's CPU per connection, so one process keeps up; the
table shows both. Variants alternate their order from round to round; figures are medians,
with paired ratios to bare.

Not run in CI and not part of ``bench.run_all``: a sample of 10,000 connections takes about
10 s and 20,000 file descriptors, a full run a few minutes. Run: ``python -m bench.capacity``
(``--connections 1000`` to try it out).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.processes import HOST

from . import common, servers
from .churn import CLOSE_1000, HANDSHAKE, MASK
from .common import Figure, Target, fmt, fmt_figure, paired_ratios
from .server import raise_fd_limit

VARIANTS = ("bare", "closeguard")
WS_IMPLEMENTATIONS = ("websockets-sansio", "wsproto")
CONNECTIONS = 10_000
#: Handshakes in flight at once: a burst of reconnects through a load balancer, not a flood
#: that only measures the listen backlog.
CONCURRENCY = 200
#: Connections opened and closed before the "before" reading.
WARM_UP = 100
#: File descriptors besides the connections (the interpreter, the log, the listening socket).
FD_HEADROOM = 200
#: uvicorn's ``--timeout-graceful-shutdown``: far above what N closes take, so a missing record
#: is never uvicorn cancelling a task that ran out of time.
GRACEFUL_SHUTDOWN = 120
#: Bounds on every wait (seconds).
OPEN_TIMEOUT = 600.0
SETTLE_LIMIT = 30.0
STOP_LIMIT = GRACEFUL_SHUTDOWN + 30.0
CLOSE_TIMEOUT = 60.0
#: The server counts as settled after this many quiet polls (no CPU tick in between).
QUIET_POLLS = 3
POLL = 0.25

#: One closeguard record line, as ``bench.server``'s file handler writes it.
RECORD = re.compile(
    r" closeguard websocket \S+ (?P<outcome>.+?): code=(?P<code>\S+) .* id=(?P<id>\w+)"
)


class IdleClient(asyncio.Protocol):
    """One idle WebSocket client: the handshake, a Pong for every Ping, and the Close.

    The server's frames are unmasked and, for an idle connection, only Ping and Close; a
    client's frames must be masked (RFC 6455 5.3), with the fixed mask churn uses.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.opened: asyncio.Future[None] = loop.create_future()
        #: The code of the server's Close frame; None when TCP ended without one.
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.close_sent = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(HANDSHAKE)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.opened.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(f"handshake refused: {head[:40]!r}"))
                self.close()
                return
            self.opened.set_result(None)
        self.read_frames()

    def read_frames(self) -> None:
        while len(self.buffer) >= 2:
            opcode = self.buffer[0] & 0x0F
            length = self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, start = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, start = int.from_bytes(self.buffer[2:10], "big"), 10
            if len(self.buffer) < start + length:
                return
            payload = bytes(self.buffer[start : start + length])
            del self.buffer[: start + length]
            if opcode == 0x9:  # Ping
                self.write(0x8A, payload)
            elif opcode == 0x8:  # Close: answer it (unless we began), then we are done
                if not self.closed.done():
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    self.closed.set_result(code)
                if not self.close_sent:
                    self.write(0x88, payload[:2])
                self.close()
                return

    def write(self, first_byte: int, payload: bytes) -> None:
        """A masked control frame (payload <= 125 bytes)."""
        assert self.transport is not None
        masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([first_byte, 0x80 | len(payload)]) + MASK + masked)

    def send_close(self) -> None:
        assert self.transport is not None
        self.close_sent = True
        self.transport.write(CLOSE_1000)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost in the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)


async def open_all(port: int, count: int, concurrency: int) -> list[IdleClient]:
    """``count`` open connections, at most ``concurrency`` handshakes in flight."""
    loop = asyncio.get_running_loop()
    clients: list[IdleClient] = []
    indices = iter(range(count))  # shared by the openers: each index is taken once

    async def opener() -> None:
        for _ in indices:
            _, client = await loop.create_connection(lambda: IdleClient(loop), HOST, port)
            clients.append(client)
            await client.opened

    await asyncio.wait_for(
        asyncio.gather(*(opener() for _ in range(min(concurrency, count)))), OPEN_TIMEOUT
    )
    return clients


async def closes(clients: Sequence[IdleClient]) -> list[int | None]:
    """The close code each client saw (None: TCP ended without a Close frame)."""
    return list(await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), CLOSE_TIMEOUT))


# The server process, from /proc ------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid``: resident memory, what a container's memory limit counts."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def process_state(pid: int) -> tuple[str, float]:
    """The one-letter state in /proc/<pid>/stat (``Z`` once it has exited, before it is
    reaped: its CPU times are still there) and its user + system CPU seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return fields[0], (int(fields[11]) + int(fields[12])) / servers.CLOCK_TICKS


async def settle(server: servers.Server) -> bool:
    """Wait until the server's CPU time stops moving (its last accepts have run); whether it
    did within ``SETTLE_LIMIT``."""
    deadline = time.monotonic() + SETTLE_LIMIT
    last, quiet = server.cpu_seconds(), 0
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        now = server.cpu_seconds()
        quiet = quiet + 1 if now == last else 0
        last = now
        if quiet >= QUIET_POLLS:
            return True
    return False


async def terminate(process: subprocess.Popen[bytes]) -> tuple[float, float]:
    """SIGTERM, then the seconds until the process has exited and the CPU seconds it spent on
    the way (polled while this loop keeps answering the clients' sockets)."""
    _, cpu_before = process_state(process.pid)
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    while time.perf_counter() - started < STOP_LIMIT:
        state, cpu = process_state(process.pid)
        if state == "Z":
            return time.perf_counter() - started, cpu - cpu_before
        await asyncio.sleep(0.01)
    raise TimeoutError(f"the server did not exit within {STOP_LIMIT:.0f} s of SIGTERM")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# One sample -----------------------------------------------------------------------------------


@dataclass
class Records:
    """What the closeguard log holds after a sample."""

    codes: collections.Counter[str]
    distinct_ids: int
    total: int
    other_lines: list[str]


@dataclass
class Sample:
    rss_per_connection: float
    rss_marginal: float
    rss_before: int
    rss_open: int
    rate: float
    cpu_us: float
    client_cpu_us: float
    settled: bool
    shutdown_seconds: float
    shutdown_cpu_us: float
    clients_told: collections.Counter[int | None]
    records: Records | None


def read_records(path: str) -> Records:
    codes: collections.Counter[str] = collections.Counter()
    ids: set[str] = set()
    other: list[str] = []
    total = 0
    with open(path, encoding="utf-8") as log:
        for line in log:
            match = RECORD.search(line)
            if match is None:
                other.append(line.rstrip("\n"))
                continue
            total += 1
            codes[match["code"]] += 1
            ids.add(match["id"])
    return Records(codes, len(ids), total, other)


async def one_sample(variant: str, ws: str, count: int, concurrency: int, log_file: str) -> Sample:
    extra = ["--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN)]
    if variant != "bare":
        extra += ["--log-file", log_file]
    with servers.running([(variant, ws, extra)]) as (server,):
        pid = server.process.pid
        warm = await open_all(server.port, WARM_UP, concurrency)
        for client in warm:
            client.send_close()
        await closes(warm)
        del warm
        await settle(server)
        rss_before, cpu_before = rss_bytes(pid), server.cpu_seconds()
        client_before = client_cpu_seconds()
        # In two halves, with a reading between: the second half's growth is the marginal
        # cost, free of the slack the allocator had left from start-up and the warm-up.
        half = count // 2
        started = time.perf_counter()
        clients = await open_all(server.port, half, concurrency)
        opening = time.perf_counter() - started
        settled = await settle(server)
        rss_half = rss_bytes(pid)
        started = time.perf_counter()
        clients += await open_all(server.port, count - half, concurrency)
        opening += time.perf_counter() - started
        settled = await settle(server) and settled
        cpu = server.cpu_seconds() - cpu_before
        client_cpu = client_cpu_seconds() - client_before
        rss_open = rss_bytes(pid)
        shutdown, shutdown_cpu = await terminate(server.process)
        told = collections.Counter(await closes(clients))
        server.process.wait(timeout=10)
    return Sample(
        rss_per_connection=(rss_open - rss_before) / count,
        rss_marginal=(rss_open - rss_half) / (count - half),
        rss_before=rss_before,
        rss_open=rss_open,
        rate=count / opening,
        cpu_us=cpu / count * 1e6,
        client_cpu_us=client_cpu / count * 1e6,
        settled=settled,
        shutdown_seconds=shutdown,
        shutdown_cpu_us=shutdown_cpu / count * 1e6,
        clients_told=told,
        records=read_records(log_file) if variant != "bare" else None,
    )


def record_problems(sample: Sample, count: int) -> list[str]:
    """What is wrong with a closeguard sample's records: N with 1012, the warm-up's with 1000,
    one id each, nothing else in the log."""
    records = sample.records
    if records is None:
        return []
    problems = []
    if records.codes["1012"] != count:
        problems.append(f"{records.codes['1012']} records with code=1012, expected {count}")
    if records.codes["1000"] != WARM_UP or records.total != count + WARM_UP:
        problems.append(
            f"{records.total} records in all, expected {count} + {WARM_UP} warm-up (code=1000);"
            f" by code: {dict(records.codes)}"
        )
    if records.distinct_ids != records.total:
        problems.append(f"{records.distinct_ids} distinct ids for {records.total} records")
    if records.other_lines:
        problems.append(
            f"{len(records.other_lines)} other lines in the log, first: {records.other_lines[:3]}"
        )
    return problems


# The run ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.add_common_arguments(parser)
    parser.add_argument("--connections", type=int, default=None, help=f"N ({CONNECTIONS:,})")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="handshakes in flight at once"
    )
    parser.add_argument(
        "--ws", choices=WS_IMPLEMENTATIONS, action="append", help="only this one (repeatable)"
    )
    args = parser.parse_args(argv)
    rounds, count = (1, 1000) if args.quick else (5, CONNECTIONS)
    rounds = args.rounds or rounds
    count = args.connections or count
    implementations: Sequence[str] = args.ws or WS_IMPLEMENTATIONS
    limit = raise_fd_limit()  # the servers inherit it and lift their own the same way
    if limit < count + FD_HEADROOM:
        print(
            f"file-descriptor limit {limit} < {count} connections + {FD_HEADROOM}: raise the "
            f"hard limit (ulimit -Hn) or run with --connections {max(limit - FD_HEADROOM, 0)}",
            file=sys.stderr,
        )
        return 2
    pinned = common.pin(common.CLIENT_CPU)
    print(f"# closeguard capacity\n\n{common.machine_table()}\n", flush=True)
    samples: dict[tuple[str, str], list[Sample]] = {}
    problems: dict[str, list[str]] = {ws: [] for ws in implementations}
    with tempfile.TemporaryDirectory() as tmp:
        for round_number in range(rounds):
            order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
            for ws in implementations:
                for variant in order:
                    log_file = os.path.join(tmp, f"{ws}-{variant}-{round_number}.log")
                    sample = asyncio.run(one_sample(variant, ws, count, args.concurrency, log_file))
                    samples.setdefault((ws, variant), []).append(sample)
                    found = record_problems(sample, count)
                    if found:
                        kept = shutil.copy(
                            log_file, tempfile.mkdtemp(prefix="closeguard-capacity-")
                        )
                        found.append(f"the log is kept at {kept}")
                    problems[ws] += [f"round {round_number + 1}: {p}" for p in found]
                    for problem in found:
                        print(f"RECORDS {ws} round {round_number + 1}: {problem}", file=sys.stderr)
    return report(samples, problems, implementations, rounds, count, args, pinned)


def report(
    samples: dict[tuple[str, str], list[Sample]],
    problems: dict[str, list[str]],
    implementations: Sequence[str],
    rounds: int,
    count: int,
    args: argparse.Namespace,
    pinned: bool,
) -> int:
    def figure(ws: str, variant: str, name: str) -> Figure:
        return Figure([getattr(s, name) for s in samples[ws, variant]])

    rows = []
    for ws in implementations:
        for variant in VARIANTS:
            runs = samples[ws, variant]
            told = sum((s.clients_told for s in runs), collections.Counter[int | None]())
            busy = Figure([s.rate * s.cpu_us / 1e6 for s in runs])
            records = (
                " / ".join(str(s.records.codes["1012"]) for s in runs if s.records)
                if variant != "bare"
                else "-"
            )
            rows.append(
                [
                    ws,
                    variant,
                    fmt_figure(figure(ws, variant, "rss_per_connection")),
                    fmt_figure(figure(ws, variant, "rss_marginal")),
                    fmt_figure(figure(ws, variant, "rate")),
                    fmt_figure(figure(ws, variant, "cpu_us")),
                    f"{busy.median * 100:.0f}%",
                    fmt(figure(ws, variant, "client_cpu_us").median),
                    fmt_figure(figure(ws, variant, "shutdown_seconds")),
                    fmt_figure(figure(ws, variant, "shutdown_cpu_us")),
                    ", ".join(f"{code}: {n}" for code, n in sorted(told.items(), key=str)),
                    records,
                ]
            )
    header = [
        "--ws",
        "variant",
        "RSS B/connection",
        "2nd half RSS B/connection",
        "set-up/s",
        "server CPU µs/connection",
        "server busy",
        "client CPU µs/connection",
        "shutdown s",
        "shutdown CPU µs/connection",
        "clients' Close codes (all rounds)",
        "1012 records per round",
    ]
    ratio_rows = []
    for ws in implementations:

        def ratio(name: str, ws: str = ws) -> str:
            guarded = [getattr(s, name) for s in samples[ws, "closeguard"]]
            bare = [getattr(s, name) for s in samples[ws, "bare"]]
            return fmt(paired_ratios(guarded, bare).median)

        def added(name: str, ws: str = ws) -> str:
            pairs = zip(samples[ws, "closeguard"], samples[ws, "bare"], strict=True)
            return fmt_figure(Figure([getattr(g, name) - getattr(b, name) for g, b in pairs]))

        ratio_rows.append(
            [
                ws,
                added("rss_per_connection"),
                added("rss_marginal"),
                ratio("rss_per_connection"),
                ratio("rate"),
                ratio("cpu_us"),
                ratio("shutdown_seconds"),
                ratio("shutdown_cpu_us"),
            ]
        )
    ratio_header = [
        "--ws",
        "RSS closeguard - bare, B/connection",
        "2nd half: closeguard - bare",
        "RSS x bare",
        "set-up rate x bare",
        "CPU/connection x bare",
        "shutdown x bare",
        "shutdown CPU x bare",
    ]
    unsettled = sum(not s.settled for runs in samples.values() for s in runs)
    not_idle = (
        f" (NOT idle within {SETTLE_LIMIT:.0f} s in {unsettled} samples)" if unsettled else ""
    )
    rss_levels = "; ".join(
        f"{ws} {variant} {fmt(Figure([s.rss_before for s in runs]).median / 2**20)} -> "
        f"{fmt(Figure([s.rss_open for s in runs]).median / 2**20)} MiB"
        for (ws, variant), runs in samples.items()
    )
    settings = (
        f"{rounds} rounds (variant order alternating), each sample a fresh uvicorn server "
        f"(one worker, no compression, default keepalive pings answered, "
        f"--timeout-graceful-shutdown {GRACEFUL_SHUTDOWN}); {WARM_UP} warm-up connections "
        f"opened and closed, then N = {count:,} idle connections opened, at most "
        f"{args.concurrency} handshakes in flight; RSS = VmRSS before and with all N open and "
        f"the server idle{not_idle} (2nd half: from N/2 open to N); "
        f"server CPU = utime + stime while opening and settling; shutdown = SIGTERM to exit; "
        f"closeguard logs every record at INFO to a file. Medians ±half the IQR; server and "
        f"client {'pinned to separate cores' if pinned else 'NOT pinned'}; soft fd limit "
        f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}; load average at the end "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + f". Server VmRSS (median): {rss_levels}."
    )
    sections = [
        settings,
        common.table(header, rows),
        "Paired ratios, closeguard / bare (the same round):",
        common.table(ratio_header, ratio_rows),
    ]
    targets = [
        Target(
            f"capacity {ws}: closeguard records missing or extra after SIGTERM ({rounds} x "
            f"{count:,} connections)",
            float(
                sum(
                    max(
                        abs(s.records.codes["1012"] - count),
                        abs(s.records.total - count - WARM_UP),
                    )
                    for s in samples[ws, "closeguard"]
                    if s.records
                )
            ),
            0.0,
            "max",
        )
        for ws in implementations
    ]
    for ws, found in problems.items():
        for problem in found:
            sections.append(f"**Records wrong ({ws})**: {problem}")
    return common.finish(
        f"Capacity: {count:,} idle connections on one uvicorn worker", sections, targets
    )


if __name__ == "__main__":
    sys.exit(main())
