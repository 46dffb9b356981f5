"""The package's public surface: what users import, and how they mount it."""

from __future__ import annotations
import __future__

import types

import closeguard


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
    assert sorted(closeguard.__all__) == sorted(public_names(closeguard))
    assert len(set(closeguard.__all__)) == len(closeguard.__all__)
    assert closeguard.__all__ == sorted(closeguard.__all__)


def test_documented_errors_are_the_promised_kinds() -> None:
    assert issubclass(closeguard.InvalidCloseCode, ValueError)
    assert issubclass(closeguard.InvalidCloseReason, ValueError)
    assert issubclass(closeguard.CloseAlreadySent, RuntimeError)


def test_wraps_any_asgi_app_directly() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        pass

    guarded = closeguard.WebSocketCloseMiddleware(app)
    assert guarded.app is app


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("closeguard").joinpath("py.typed").is_file()


def test_version_is_the_distribution_s() -> None:
    """One place says the version (pyproject.toml); the package reports what was installed."""
    from importlib.metadata import version

    assert closeguard.__version__ == version("closeguard")
    assert closeguard.__version__ != "0+unknown"


def test_open_connections_refuses_metrics_it_cannot_call() -> None:
    """A mistake names itself at construction, not as HTTP 500 on every handshake."""
    import pytest

    from closeguard.open_connections import OpenConnectionsMiddleware

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    with pytest.raises(TypeError, match=r"metrics must have connection_opened\(\)"):
        OpenConnectionsMiddleware(app, metrics=None)  # type: ignore[arg-type]


def test_importing_closeguard_registers_nothing_to_run_at_exit() -> None:
    """A process that imports closeguard and never serves a WebSocket has nothing of
    closeguard's to run when it exits: the exit-time writer comes with the first connection."""
    import subprocess
    import sys

    program = (
        "import multiprocessing.util as util\n"
        "before = len(util._finalizer_registry)\n"
        "import closeguard, closeguard.asgi, closeguard.prometheus\n"
        "print(len(util._finalizer_registry) - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "0"
