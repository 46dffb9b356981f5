"""The echo server of the end-to-end benchmarks: uvicorn in its own process, pinned to one core.

``python -m bench.echo_server --port N --variant bare|... --ws websockets-sansio|wsproto``
serves the echo app on 127.0.0.1 until SIGTERM.
Variants that log write their lines at INFO to ``--log-file``, through the handler a deployed
service would give its logger. ``GET /stats`` answers with the traced Python memory (with
``--tracemalloc``) after a full garbage collection: the memory benchmark's probe.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import socket
import tracemalloc
from collections.abc import MutableMapping
from typing import Any

import uvicorn

from . import common
from .harness import raise_fd_limit

#: ``bare+fields line``: the bare app writing one line per connection, of the length of
#: closeguard's and carrying a record's fields as ``extra`` (as closeguard's line carries them
#: for structured handlers): the least code that leaves a structured record per connection,
#: churn's denominator. ``closeguard-quiet``: closeguard with its records switched off;
#: ``closeguard+policies``: with ``common.EVERY_POLICY``, every close policy on, none reached.
VARIANTS = (
    "bare",
    "reference",
    "bare+fields line",
    "closeguard",
    "closeguard-quiet",
    "closeguard+policies",
)


async def stats(send: Any) -> None:
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    body = json.dumps({"traced": traced}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def bench_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/stats":
        await stats(send)
        return
    await common.echo_app(scope, receive, send)


def logger_to(name: str, log_file: str | None, level: int = logging.INFO) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
    return logger


def fields_line_app(log_file: str | None) -> Any:
    from closeguard.record import FIELD_NAMES

    # All None: what an entry costs a ``LogRecord`` does not depend on its value.
    fields = dict.fromkeys(FIELD_NAMES)
    logger = logger_to("bench.line", log_file)

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await bench_app(scope, receive, send)
        if scope["type"] == "websocket":
            logger.info(
                "websocket %s closed: code=%s reason=%s initiator=%s%s",
                scope["path"],
                1000,
                "''",
                "client",
                " duration=0.001s received=0/0B sent=0/0B id=0123456789abcdef0123456789abcdef",
                extra=dict(fields),  # one per line, as an app's
            )

    return app


def build_app(variant: str, log_file: str | None, **options: Any) -> Any:
    if variant == "bare":
        return bench_app
    if variant == "reference":
        return common.Reference(bench_app)
    if variant == "bare+fields line":
        return fields_line_app(log_file)
    from closeguard import LOGGER_NAME, WebSocketCloseMiddleware

    quiet = variant == "closeguard-quiet"
    logger_to(LOGGER_NAME, log_file, logging.WARNING if quiet else logging.INFO)
    if variant == "closeguard+policies":
        options = {**common.EVERY_POLICY, **options}
    return WebSocketCloseMiddleware(bench_app, **options)


def number(text: str) -> int | float | str:
    """An option's value from the command line: a whole number, a number, or text (a path)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--ws", default="websockets-sansio")
    parser.add_argument("--log-file", default=None)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a closeguard option, a number or a path (drain_file=..., idle_timeout=10)",
    )
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_fd_limit()
    if args.tracemalloc:
        tracemalloc.start(1)
    options = dict(option.split("=", 1) for option in args.option)
    app = build_app(args.variant, args.log_file, **{k: number(v) for k, v in options.items()})
    # IPPROTO_TCP, as uvicorn's own bind gets it from getaddrinfo: asyncio only sets
    # TCP_NODELAY on accepted sockets whose proto says TCP (else Nagle adds 40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        app, ws=args.ws, log_level="warning", access_log=False, lifespan="off", backlog=4096
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
