"""The ``asgi.py`` of a Django project with Channels: closeguard around the ``websocket``
application. Channels lets a consumer's exception propagate, so nothing else is needed."""

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.urls import URLPattern, path

from closeguard import WebSocketCloseMiddleware

if not settings.configured:  # a project points DJANGO_SETTINGS_MODULE at its settings instead
    settings.configure(
        # The host names the site is served under; the origin check below accepts a
        # handshake only with an Origin header naming one of them.
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,  # Django's HTTP views: `urlpatterns` below
    )
django_asgi_app = get_asgi_application()  # sets Django up: before any model is imported

urlpatterns: list[URLPattern] = []  # no HTTP views here: a request gets Django's 404


class Echo(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data, bytes_data)


class Fail(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        raise RuntimeError("a bug, with a secret in its text")  # the client gets 1011


# django-stubs types path() for views only, hence the ignore; Channels routes consumers with it.
routes = URLRouter([path("ws/echo", Echo.as_asgi()), path("ws/fail", Fail.as_asgi())])  # type: ignore[arg-type, list-item]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Outermost in the WebSocket stack: a handshake the origin check refuses is recorded.
        "websocket": WebSocketCloseMiddleware(
            AllowedHostsOriginValidator(routes),
            max_message_size=4096,
        ),
    }
)
