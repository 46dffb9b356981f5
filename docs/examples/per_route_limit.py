"""A limit chosen per connection: uploads get 8 MiB, everything else 64 KiB, /ws/raw none."""

from starlette.types import ASGIApp, Scope

from closeguard import WebSocketCloseMiddleware


def limit_for(scope: Scope) -> int | None:
    path: str = scope["path"]
    if path.startswith("/ws/upload"):
        return 8 * 1024 * 1024
    if path == "/ws/raw":
        return None  # no check: the server's own limit applies
    return 64 * 1024


def guard(app: ASGIApp) -> WebSocketCloseMiddleware:
    return WebSocketCloseMiddleware(app, max_message_size=limit_for)
