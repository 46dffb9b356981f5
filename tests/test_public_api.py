"""The package's public surface: what users import, and how they mount it."""

from __future__ import annotations

import middleware


def test_all_is_sorted_and_importable() -> None:
    assert middleware.__all__ == sorted(middleware.__all__)
    for name in middleware.__all__:
        assert getattr(middleware, name) is not None


def test_documented_errors_are_the_promised_kinds() -> None:
    assert issubclass(middleware.InvalidCloseCode, ValueError)
    assert issubclass(middleware.InvalidCloseReason, ValueError)
    assert issubclass(middleware.CloseAlreadySent, RuntimeError)


def test_wraps_any_asgi_app_directly() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    guarded = middleware.WebSocketCloseMiddleware(app)
    assert guarded.app is app


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("middleware").joinpath("py.typed").is_file()
