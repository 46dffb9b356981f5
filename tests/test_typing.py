"""Every framework's app takes closeguard in its place, under ``mypy --strict`` (CI runs mypy on
this file) and at run time: each framework types scope, receive and send its own way.
"""

from __future__ import annotations

from blacksheep import Application, Router
from channels.routing import ProtocolTypeRouter, URLRouter
from fastapi import FastAPI
from litestar import Litestar
from quart import Quart
from starlette.applications import Starlette

from closeguard import WebSocketCloseMiddleware
from closeguard.prometheus import OpenConnectionsMiddleware, PrometheusCloseMetrics


def test_every_framework_app_is_taken_as_it_is() -> None:
    guarded: list[WebSocketCloseMiddleware] = [
        WebSocketCloseMiddleware(Litestar(route_handlers=[])),
        WebSocketCloseMiddleware(Application(router=Router())),  # a router of its own
        WebSocketCloseMiddleware(FastAPI()),
        WebSocketCloseMiddleware(Starlette()),
        WebSocketCloseMiddleware(ProtocolTypeRouter({"websocket": URLRouter([])})),
    ]
    metrics = PrometheusCloseMetrics(registry=None)
    counted = OpenConnectionsMiddleware(Litestar(route_handlers=[]), metrics=metrics)
    assert all(callable(app) for app in [*guarded, counted])


def test_quarts_asgi_app_takes_closeguard_in_its_place() -> None:
    app = Quart(__name__)
    # mypy's rule against assigning to any method (method-assign), not a type mismatch: the
    # middleware's type fits where Quart's asgi_app stood.
    app.asgi_app = WebSocketCloseMiddleware(app.asgi_app)  # type: ignore[method-assign]
    assert isinstance(app.asgi_app, WebSocketCloseMiddleware)
