"""Django Channels, mounted as docs/examples/channels_app.py shows: closeguard around the
``websocket`` application of the ``ProtocolTypeRouter``. Channels lets a consumer's exception
propagate, so nothing else is needed. Each route has an async consumer and, under ``/sync``,
a sync one; there is no channel layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import django
from django.conf import settings

settings.configure(ALLOWED_HOSTS=["127.0.0.1"])
django.setup()

from channels.exceptions import StopConsumer  # noqa: E402 - Django is set up first
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from closeguard import WebSocketCloseMiddleware  # noqa: E402
from tests.framework_apps import LIMIT, SECRET  # noqa: E402
from tests.record_log import write_records_to_test_log  # noqa: E402


def route(scope: Mapping[str, Any]) -> tuple[str, dict[str, object]]:
    """The scenario (the path's first part) and the URL's keyword arguments."""
    url_route = scope["url_route"]
    assert isinstance(url_route, dict)
    return str(scope["path"]).removeprefix("/sync").split("/")[1], url_route["kwargs"]


def reason_of(scope: Mapping[str, Any]) -> str:
    query = scope["query_string"]
    assert isinstance(query, bytes)
    return parse_qs(query.decode()).get("reason", [""])[0]


class AsyncScenarios(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        scenario, kwargs = route(self.scope)
        if scenario == "close":
            await self.close(int(str(kwargs["code"])), reason_of(self.scope))
        elif scenario == "raise":
            raise RuntimeError(SECRET)
        elif scenario == "return":
            await self.send("ready")
            raise StopConsumer  # the consumer ends without a close

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data)


class SyncScenarios(WebsocketConsumer):
    def connect(self) -> None:
        self.accept()
        scenario, kwargs = route(self.scope)
        if scenario == "close":
            self.close(int(str(kwargs["code"])), reason_of(self.scope))
        elif scenario == "raise":
            raise RuntimeError(SECRET)
        elif scenario == "return":
            self.send("ready")
            raise StopConsumer  # the consumer ends without a close

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data)


def urls(prefix: str, consumer: type[AsyncScenarios] | type[SyncScenarios]) -> list[Any]:
    app = consumer.as_asgi()
    routes = ["close/<int:code>/<str:token>", "raise/<str:token>", "return/<str:token>"]
    # django-stubs types path() for views only; Channels routes consumers with it.
    return [path(prefix + route, app) for route in [*routes, "echo/<str:token>"]]  # type: ignore[arg-type]


write_records_to_test_log()
application = ProtocolTypeRouter(
    {
        "websocket": WebSocketCloseMiddleware(
            URLRouter(urls("", AsyncScenarios) + urls("sync/", SyncScenarios)),
            max_message_size=LIMIT,
        ),
    }
)
