"""``python -m app [--host H] [--port P]``: the service under uvicorn, 127.0.0.1:8000 by default."""

from __future__ import annotations

import argparse

import uvicorn

#: uvicorn's own per-message limit, kept above closeguard's so that closeguard's 1009 (with its
#: reason and its record) is the one a client gets.
UVICORN_WS_MAX_SIZE = 16 * 1024 * 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app", description="Run the closeguard reference service under uvicorn."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    args = parser.parse_args(argv)

    # Imported here so that --help works whatever the environment says.
    from .logs import logging_config
    from .main import app, settings

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=logging_config(settings),
        ws_max_size=max(UVICORN_WS_MAX_SIZE, 2 * settings.max_message_size),
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
