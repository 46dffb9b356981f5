"""The package's public surface: what users import, and how they mount it."""

from __future__ import annotations
import __future__

import types

import middleware


def public_names(module: types.ModuleType) -> set[str]:
    """What ``module`` defines or imports under a public name, submodules and ``from
    __future__ import annotations`` aside: what a user sees and may take for API."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and value is not __future__.annotations
    }


def test_all_names_every_public_name_once_sorted() -> None:
    """``__all__`` is the public surface: nothing public left out of it, nothing in it that
    the package does not have, no name twice, in the order users read it."""
    assert sorted(middleware.__all__) == sorted(public_names(middleware))
    assert len(set(middleware.__all__)) == len(middleware.__all__)
    assert middleware.__all__ == sorted(middleware.__all__)


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
