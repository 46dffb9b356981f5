"""In-process cost per message: the echo app driven by hand-written receive/send coroutines.

No server and no event-loop scheduling: ``receive`` returns the next prepared message and
``send`` drops what it gets, so the time measured is the app's plus the middleware's, and
nothing else. Variants, measured in interleaved rounds in one process:

* ``bare``: the echo app alone;
* ``no-op wrapper``: a pure ASGI pass-through that wraps ``receive`` and ``send``, the floor
  for any middleware that sees every message;
* ``required work only``: a reference, not a product: the size check and the four counters
  closeguard's record needs, and nothing else (what that work costs by itself in CPython);
* ``closeguard``: defaults, logging at INFO into a handler that discards (it logs once per
  connection, so the per-connection cost is reported separately);
* ``opentelemetry``: ``OpenTelemetryMiddleware`` with the SDK ``TracerProvider``, spans to an
  exporter that drops them;
* ``sentry``: ``SentryAsgiMiddleware`` after ``sentry_sdk.init`` with tracing on and a
  transport that drops envelopes.

Per message = (time of a connection with M messages - time of a connection with none) / M;
one message is one ``receive`` plus one ``send``. Target: closeguard <= 1.25 x the no-op
wrapper, for every payload kind.

Run: ``python -m bench.per_message`` (``--quick`` for the CI smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from . import common
from .common import PAYLOADS, Figure, Target, echo_app, fmt, fmt_figure, paired_ratios

Scope = MutableMapping[str, Any]
App = Callable[[Scope, Any, Any], Any]

TARGET_VS_NOOP = 1.25
#: Quick runs are a few milliseconds per sample on a shared CI machine (closeguard reads
#: 1.44-1.59 there where a full run says 1.42-1.52): the smoke run checks the code paths and
#: catches a gross regression (a coroutine layer or an encode per message is 0.2-0.4 more);
#: the full run checks the real target.
QUICK_TARGET_VS_NOOP = 2.0


class PassThrough:
    """A no-op pure ASGI middleware that wraps receive and send: the floor for closeguard."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return

        async def wrapped_receive() -> Any:
            return await receive()

        async def wrapped_send(message: Any) -> None:
            await send(message)

        await self.app(scope, wrapped_receive, wrapped_send)


class RequiredWorkOnly:
    """The least per-message work closeguard's job asks for, and nothing else: the inbound size
    check and the four counters its record must hold, with ``send`` a plain function as in
    closeguard. No close checks, no state, no record: a reference for what the required work
    costs in CPython by itself, shown next to closeguard, not judged."""

    def __init__(self, app: App, limit: int = 1_048_576) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        text_limit = limit // 4
        received = received_bytes = sent = sent_bytes = 0

        async def counted_receive() -> Any:
            nonlocal received, received_bytes
            message = await receive()
            text = message.get("text")
            if text is not None:
                size = len(text)
                if size > text_limit and len(text.encode()) > limit:
                    raise ValueError("too big")
            else:
                data = message.get("bytes")
                if data is None:
                    return message
                size = len(data)
                if size > limit:
                    raise ValueError("too big")
            received += 1
            received_bytes += size
            return message

        def counted_send(message: Any) -> Any:
            nonlocal sent, sent_bytes
            if message["type"] == "websocket.send":
                text = message.get("text")
                sent += 1
                sent_bytes += len(text) if text is not None else len(message.get("bytes") or b"")
            return send(message)

        await self.app(scope, counted_receive, counted_send)


class Discard(logging.Handler):
    """A handler that takes every record and keeps none: the record is built, not written."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


def closeguard_app() -> App:
    from middleware import LOGGER_NAME, WebSocketCloseMiddleware

    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [Discard()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return WebSocketCloseMiddleware(echo_app)


def opentelemetry_app() -> App:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class DropSpans(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(DropSpans()))
    app: App = OpenTelemetryMiddleware(echo_app, tracer_provider=provider)
    return app


def sentry_app() -> App:
    import sentry_sdk
    from sentry_sdk.integrations.asgi import SentryAsgiMiddleware
    from sentry_sdk.transport import Transport

    class DropEnvelopes(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            pass

    sentry_sdk.init(
        dsn="https://public@sentry.invalid/1",  # never contacted: the transport drops all
        transport=DropEnvelopes,
        traces_sample_rate=1.0,
        default_integrations=False,  # no global patches (logging!) that would tax the others
        auto_enabling_integrations=False,
    )
    app: App = SentryAsgiMiddleware(echo_app)
    return app


VARIANTS: dict[str, Callable[[], App]] = {
    "bare": lambda: echo_app,
    "no-op wrapper": lambda: PassThrough(echo_app),
    "required work only": lambda: RequiredWorkOnly(echo_app),
    "closeguard": closeguard_app,
    "opentelemetry": opentelemetry_app,
    "sentry": sentry_app,
}

SCOPE: Scope = {
    "type": "websocket",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "scheme": "ws",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 54321),
    "root_path": "",
    "path": "/echo",
    "raw_path": b"/echo",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
        (b"user-agent", b"bench"),
    ],
    "subprotocols": [],
    "state": {},
    "extensions": {"websocket.http.response": {}},
}

CONNECT = {"type": "websocket.connect"}
DISCONNECT = {"type": "websocket.disconnect", "code": 1000, "reason": ""}


def script(payload: str | bytes, count: int) -> list[dict[str, Any]]:
    key = "text" if isinstance(payload, str) else "bytes"
    return [CONNECT, *[{"type": "websocket.receive", key: payload}] * count, DISCONNECT]


async def drop(message: Any) -> None:
    pass


def receiver(messages: list[dict[str, Any]]) -> Callable[[], Any]:
    """The cheapest ``receive``: the next prepared message, never a suspension."""
    nxt = iter(messages).__next__

    async def receive() -> Any:
        return nxt()

    return receive


async def connections(app: App, messages: list[dict[str, Any]], times: int) -> int:
    """Run ``times`` connections of ``messages``; the time in nanoseconds."""
    gc.collect()
    started = time.perf_counter_ns()
    for _ in range(times):
        await app(dict(SCOPE), receiver(messages), drop)
    return time.perf_counter_ns() - started


async def measure(
    rounds: int, messages: int, long_connections: int, empty_connections: int
) -> tuple[dict[tuple[str, str], list[float]], dict[str, list[float]]]:
    apps = {name: make() for name, make in VARIANTS.items()}
    per_message: dict[tuple[str, str], list[float]] = {}
    per_connection: dict[str, list[float]] = {name: [] for name in apps}
    scripts = {kind: script(payload, messages) for kind, payload in PAYLOADS.items()}
    empty = script("", 0)
    names = list(apps)
    for name in names:  # warm up every path once, outside the measurement
        for kind in PAYLOADS:
            await connections(apps[name], scripts[kind], 1)
    for round_number in range(rounds):
        # Rotate the order each round, so no variant always runs first or last.
        shift = round_number % len(names)
        order = names[shift:] + names[:shift]
        for name in order:
            per_connection[name].append(
                await connections(apps[name], empty, empty_connections) / empty_connections
            )
        for kind in PAYLOADS:
            for name in order:
                total = await connections(apps[name], scripts[kind], long_connections)
                per_conn = per_connection[name][-1]
                value = (total / long_connections - per_conn) / messages
                per_message.setdefault((name, kind), []).append(value)
    return per_message, per_connection


def report(
    per_message: dict[tuple[str, str], list[float]],
    per_connection: dict[str, list[float]],
    limit: float,
    settings: str,
) -> tuple[list[str], list[Target]]:
    names = list(per_connection)
    kinds = list(PAYLOADS)
    header = ["variant", *[f"{kind} ns/msg" for kind in kinds], "x bare", "x no-op"]
    rows = []
    targets = []
    for name in names:
        row = [name]
        row += [fmt_figure(Figure(per_message[name, kind])) for kind in kinds]
        over_bare = [
            paired_ratios(per_message[name, k], per_message["bare", k]).median for k in kinds
        ]
        over_noop = [
            paired_ratios(per_message[name, k], per_message["no-op wrapper", k]).median
            for k in kinds
        ]
        row.append(" / ".join(fmt(r) for r in over_bare))
        row.append(" / ".join(fmt(r) for r in over_noop))
        rows.append(row)
    for kind in kinds:
        ratio = paired_ratios(per_message["closeguard", kind], per_message["no-op wrapper", kind])
        name = f"per message, {kind}: closeguard / no-op"
        targets.append(Target(name, ratio.median, limit, "max"))
    conn_rows = []
    for name in names:
        figure = Figure([v / 1000 for v in per_connection[name]])
        conn_rows.append(
            [
                name,
                fmt_figure(figure),
                fmt(paired_ratios(per_connection[name], per_connection["bare"]).median),
            ]
        )
    sections = [
        settings,
        "Time per message (one receive + one send), median ±half the interquartile range; "
        "ratios are medians of per-round ratios, per payload kind in the order "
        + ", ".join(kinds)
        + ":",
        common.table(header, rows),
        "Time per connection (connect, accept, disconnect, no messages; closeguard logs its "
        "record here):",
        common.table(["variant", "µs/connection", "x bare"], conn_rows),
    ]
    return sections, targets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    # Long connections: closeguard's per-connection work (its log record) is subtracted as
    # measured on empty connections, and a short connection turns that estimate's noise, and
    # the garbage collector's passes, into a per-message cost that is not there.
    if args.quick:
        rounds, messages, long_connections, empty_connections = 5, 2000, 1, 50
    else:
        rounds, messages, long_connections, empty_connections = 25, 2000, 3, 200
    rounds = args.rounds or rounds
    pinned = common.pin(common.CLIENT_CPU)
    per_message, per_connection = asyncio.run(
        measure(rounds, messages, long_connections, empty_connections)
    )
    limit = QUICK_TARGET_VS_NOOP if args.quick else TARGET_VS_NOOP
    settings = (
        f"{rounds} interleaved rounds; per round and variant: {long_connections} connections "
        f"x {messages} messages per payload kind, {empty_connections} empty connections; "
        f"{'pinned to one core' if pinned else 'not pinned'}"
        f"{'; QUICK mode, lenient threshold' if args.quick else ''}."
    )
    sections, targets = report(per_message, per_connection, limit, settings)
    return common.finish("Per-message cost in process", sections, targets)


if __name__ == "__main__":
    sys.exit(main())
