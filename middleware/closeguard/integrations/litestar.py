"""Litestar: let an exception after a WebSocket's accept reach closeguard.

Litestar wraps every app in its own exception middleware, which ends a WebSocket whose handler
raised with its own close, ``4500 'Internal Server Error'``, so closeguard, wrapped around the
app, never sees the exception. That middleware runs the app's ``after_exception`` hooks first,
with the exception and the scope; this hook raises the exception again for a WebSocket, so it
leaves Litestar and closeguard sends 1011 and records it::

    app = WebSocketCloseMiddleware(
        Litestar(route_handlers=[...], after_exception=[reraise_websocket_exceptions])
    )

Litestar's own exceptions (``WebSocketException`` with the code the app chose, the
``WebSocketDisconnect`` of a client that left, a guard's ``NotAuthorizedException``) are
Litestar's deliberate closes and keep them; closeguard checks those closes like any other.
HTTP requests are not touched.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.exceptions import LitestarException
from litestar.types import Scope

__all__ = ["reraise_websocket_exceptions"]


async def reraise_websocket_exceptions(exc: Exception, scope: Scope) -> None:
    """An ``after_exception`` hook: raise ``exc`` again for a WebSocket, unless Litestar's own."""
    if scope["type"] == ScopeType.WEBSOCKET and not isinstance(exc, LitestarException):
        raise exc
