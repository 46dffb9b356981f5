"""What every benchmark shares: the echo app, statistics, pinning, the machine and the table.

The figures are only comparable inside one run, so each script measures every variant in the
same process (or against servers started by it), in interleaved rounds, and reports ratios of
paired rounds: a slow moment of the machine hits both sides of a ratio, not one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

#: Text with 2-, 3- and 4-byte UTF-8 characters, next to ASCII and bytes: the size check is
#: free for ASCII and bytes and costs an encode for the rest, so all of them are measured.
PAYLOADS: dict[str, str | bytes] = {
    "ascii": "hello world, this is a plain ASCII chat message",
    "multibyte": "héllo wörld ✓ — ça va? Grüße, ĉu vi?",
    "emoji": "ok 👍🎉 party 🚀 time 😀",
    "bytes": bytes(range(48)),
}

#: Every close policy on, none ever reached: what watching costs a message (issue 21).
EVERY_POLICY = {
    "idle_timeout": 3600,
    "max_lifetime": 7200,
    "first_message_timeout": 3600,
    "max_messages_per_second": 1e9,
    "max_bytes_per_second": 1e12,
    "max_connections": 10**6,
    "max_connections_per_client": 10**6,
}

#: Packages whose versions go into every report.
PACKAGES = (
    "closeguard",
    "starlette",
    "uvicorn",
    "websockets",
    "wsproto",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "sentry-sdk",
)


async def echo_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """A raw ASGI echo app: the least work an app can do per message, so overhead shows."""
    if scope["type"] == "http":
        await http_404(send)
        return
    if scope["type"] != "websocket":
        return
    message = await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})


async def http_404(send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class Counts:
    """The reference's per-connection state, on an object (as an exit-time record reads it; a
    closure's cells it could not): the four counts, and whether a Close went out."""

    __slots__ = ("closed", "received", "received_bytes", "sent", "sent_bytes")

    def __init__(self) -> None:
        self.closed = False
        self.received = self.received_bytes = self.sent = self.sent_bytes = 0


class Reference:
    """The least plain code doing the per-message work closeguard's promises need, and nothing
    else: ``async def`` ``receive`` and ``send`` that check each inbound message's size in
    UTF-8 bytes against the limit, keep the four counts (messages and bytes, each way) on a
    :class:`Counts`, and refuse data after a Close on every send (RFC 6455 5.5.1). No record,
    no close-code checks. ``per_message`` and ``throughput`` (under ``wsproto``) judge
    closeguard against it."""

    def __init__(
        self, app: Callable[[MutableMapping[str, Any], Any, Any], Any], limit: int = 1_048_576
    ) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        counts = Counts()

        async def checked_receive() -> Any:
            message = await receive()
            text = message.get("text")
            if text is not None:
                size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
            else:
                data = message.get("bytes")
                if data is None:
                    return message
                size = len(data)
            if size > limit:
                raise ValueError(f"a message of {size} bytes exceeds the limit of {limit}")
            counts.received += 1
            counts.received_bytes += size
            return message

        async def checked_send(message: Any) -> None:
            if message["type"] != "websocket.send":
                if message["type"] == "websocket.close":
                    counts.closed = True
                await send(message)
                return
            if counts.closed:
                raise RuntimeError("data after a Close frame (RFC 6455 5.5.1)")
            text = message.get("text")
            if text is None:
                size = len(message.get("bytes") or b"")
            else:
                size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
            await send(message)
            counts.sent += 1
            counts.sent_bytes += size

        await self.app(scope, checked_receive, checked_send)


# Statistics ---------------------------------------------------------------------------------


@dataclass
class Figure:
    """Samples of one quantity, one per round; the median is what the table shows."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the range between the 25th and 75th percentile, relative to the median."""
        if len(self.samples) < 4:
            low, high = min(self.samples), max(self.samples)
        else:
            quartiles = statistics.quantiles(self.samples, n=4)
            low, high = quartiles[0], quartiles[2]
        median = self.median
        return 0.0 if median == 0 else (high - low) / 2 / abs(median)


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> Figure:
    """Round-by-round ratios: both figures of a round saw the same state of the machine."""
    return Figure([a / b for a, b in zip(numerator, denominator, strict=True) if b])


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def fmt_figure(figure: Figure) -> str:
    return f"{fmt(figure.median)} ±{figure.spread * 100:.1f}%"


# Targets ------------------------------------------------------------------------------------


@dataclass
class Target:
    """One pass/fail check: ``value`` compared with ``limit`` the way ``kind`` says."""

    name: str
    value: float
    limit: float
    kind: str  # "max": value <= limit passes; "min": value >= limit passes

    @property
    def passed(self) -> bool:
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def row(self) -> str:
        sign = "<=" if self.kind == "max" else ">="
        verdict = "pass" if self.passed else "**MISS**"
        return f"| {self.name} | {fmt(self.value)} | {sign} {fmt(self.limit)} | {verdict} |"


def targets_table(targets: Sequence[Target]) -> str:
    lines = ["| target | measured | required | result |", "|---|---|---|---|"]
    lines += [target.row() for target in targets]
    return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# The machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_table() -> str:
    rows = [
        ["nproc", str(os.cpu_count())],
        ["CPU", cpu_model()],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Python", f"{platform.python_implementation()} {sys.version.split()[0]}"],
        ["load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())],
    ]
    rows += [[package, version(package)] for package in PACKAGES]
    return table(["", "version"], rows)


# Pinning ------------------------------------------------------------------------------------

#: The cores this process may use before any pinning: children inherit a pinned parent's
#: affinity, so the choice is made here, once, and handed to the server as a core number.
ALLOWED_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
SERVER_CPU = 0
CLIENT_CPU = 1


def can_pin() -> bool:
    return len(ALLOWED_CPUS) >= 2


def core(role: int) -> int:
    """The core number for ``SERVER_CPU`` or ``CLIENT_CPU``."""
    return ALLOWED_CPUS[role % len(ALLOWED_CPUS)]


def pin(role: int) -> bool:
    """Pin this process to the core for ``role`` when there are two cores; say if it did."""
    if not can_pin():
        return False
    os.sched_setaffinity(0, {core(role)})
    return True


def arguments(
    doc: str | None, argv: Sequence[str] | None, connections: bool = False
) -> argparse.Namespace:
    """The command line every benchmark takes (``--connections`` where asked), parsed."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few rounds and small counts (CI smoke run; lenient thresholds, see bench/README.md)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="override the round count")
    if connections:
        parser.add_argument("--connections", type=int, default=None)
    return parser.parse_args(argv)


#: Every target checked in this process, for ``run_all``'s summary.
CHECKED: list[Target] = []


def finish(title: str, sections: Sequence[str], targets: Sequence[Target]) -> int:
    """Print the report; the exit status is 1 when a target was missed."""
    CHECKED.extend(targets)
    print(f"## {title}\n", flush=True)
    for section in sections:
        print(section + "\n")
    print(targets_table(targets) + "\n", flush=True)
    missed = [target.name for target in targets if not target.passed]
    if missed:
        print(f"MISSED: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0
