"""What ``pip install`` gives a user: one top-level package, ``closeguard``, that lives beside
a project's own ``middleware`` module or package without taking its name.

The wheel is built from this checkout and installed into a fresh venv without pip, whose only
other packages are this venv's (a .pth file: no download, no copy of the dependencies).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "middleware" / "closeguard"
QUIET = ("--quiet", "--disable-pip-version-check")

#: A project's own ``middleware``, as Django and FastAPI projects often have one.
PROJECT_MIDDLEWARE = '''"""This project's own middleware, nothing to do with closeguard."""

OWNER = "project"
'''

#: The project's ``middleware.auth`` still imports, and is the project's.
PRINT_PROJECT_AUTH_OWNER = (
    "import importlib; print(importlib.import_module('middleware.auth').OWNER)"
)

#: A user's program: the project's ``middleware`` and closeguard in one process, a WebSocket
#: driven through Starlette's TestClient, and what it saw printed as JSON.
PROGRAM = """
import importlib
import json
import sys

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import closeguard
from closeguard import CloseRecord, WebSocketCloseMiddleware

# The project's own package, named as closeguard's source folder is: "middleware".
project = importlib.import_module("middleware")
project_auth = importlib.import_module("middleware.auth")
records = []


async def fails(websocket):
    await websocket.accept()
    raise RuntimeError("a bug")


app = Starlette(routes=[WebSocketRoute("/ws", fails)])
app.add_middleware(WebSocketCloseMiddleware, on_close=records.append, reraise=False)
with TestClient(app) as client, client.websocket_connect("/ws") as websocket:
    try:
        websocket.receive_text()
    except WebSocketDisconnect as ended:
        close = [ended.code, ended.reason]

json.dump(
    {
        "project_middleware": [project.OWNER, project_auth.OWNER, project.__file__],
        "closeguard_file": closeguard.__file__,
        "version": closeguard.__version__,
        "close": close,
        "record": [records[0].code, type(records[0]).__module__],
        "record_class_is_api": type(records[0]) is CloseRecord,
    },
    sys.stdout,
)
"""


def run_python(python: Path | str, script: Path) -> dict[str, Any]:
    """Run ``script`` as a user would (``python main.py``, its folder first on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    done = subprocess.run(
        [str(python), script.name],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, as ``pip install .`` builds it."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *QUIET, "--no-deps", "-w", str(tmp), str(ROOT)],
        check=True,
        timeout=300,
    )
    [built] = tmp.glob("closeguard-*.whl")
    return built


def fresh_venv(where: Path) -> Path:
    """A venv without pip that reaches this venv's packages through a .pth file; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # This venv's own .pth files (closeguard's editable install) are not read from there.
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip(python: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *args, *QUIET],
        check=True,
        timeout=300,
    )


def package_files() -> set[str]:
    """The package's files, as the wheel should name them."""
    return {
        f"closeguard/{path.relative_to(PACKAGE).as_posix()}"
        for path in PACKAGE.rglob("*")
        if (path.suffix == ".py" or path.name == "py.typed") and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_closeguard_and_nothing_else(wheel: Path) -> None:
    """One top-level name: no ``middleware``, no app/, tests/ or bench/."""
    with zipfile.ZipFile(wheel) as archive:
        names = {name for name in archive.namelist() if ".dist-info/" not in name}
    assert {name.split("/")[0] for name in names} == {"closeguard"}
    assert names == package_files()


def user_project(root: Path) -> Path:
    """A project with its own ``middleware/`` package (and a submodule) and a main script."""
    (root / "middleware").mkdir(parents=True)
    (root / "middleware" / "__init__.py").write_text(PROJECT_MIDDLEWARE)
    (root / "middleware" / "auth.py").write_text(PROJECT_MIDDLEWARE)
    script = root / "main.py"
    script.write_text(PROGRAM)
    return script


def test_a_project_s_own_middleware_package_and_closeguard_live_side_by_side(
    wheel: Path, tmp_path: Path
) -> None:
    python = fresh_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", "--no-index", str(wheel))
    seen = run_python(python, user_project(tmp_path / "project"))
    assert seen["project_middleware"][:2] == ["project", "project"]
    assert Path(seen["closeguard_file"]).is_relative_to(tmp_path / "venv")
    assert seen["version"] == wheel.name.split("-")[1]
    assert seen["close"] == [1011, "internal error"]
    assert seen["record"] == [1011, "closeguard.record"]
    assert seen["record_class_is_api"]


def test_an_editable_middleware_package_survives_closeguard_s_install_and_uninstall(
    wheel: Path, tmp_path: Path
) -> None:
    """The project's ``middleware`` installed editable (run from anywhere), closeguard from its
    wheel: both import; uninstalling closeguard leaves every file of the project in place."""
    project = tmp_path / "project"
    user_project(project)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "users-project"\nversion = "1.0"\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["middleware"]\n'
    )
    python = fresh_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", "--no-index", "--no-build-isolation", "-e", str(project))
    pip(python, "install", "--no-deps", "--no-index", str(wheel))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = elsewhere / "main.py"
    script.write_text(PROGRAM)
    seen = run_python(python, script)
    assert seen["project_middleware"][:2] == ["project", "project"]
    assert Path(seen["project_middleware"][2]) == project / "middleware" / "__init__.py"
    assert seen["close"] == [1011, "internal error"]

    before = sorted(p.relative_to(project) for p in project.rglob("*.py"))
    pip(python, "uninstall", "--yes", "closeguard")
    assert sorted(p.relative_to(project) for p in project.rglob("*.py")) == before
    done = subprocess.run(
        [str(python), "-c", PRINT_PROJECT_AUTH_OWNER],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "project"


def test_this_checkout_s_editable_install_is_its_own_files(tmp_path: Path) -> None:
    """An edit shows without reinstalling: closeguard is the file in middleware/closeguard/."""
    seen = run_python(sys.executable, user_project(tmp_path / "project"))
    assert Path(seen["closeguard_file"]).resolve() == PACKAGE / "__init__.py"
    assert seen["project_middleware"][:2] == ["project", "project"]
    assert seen["record"] == [1011, "closeguard.record"]


TYPED_USER = """
from starlette.applications import Starlette

from closeguard import CloseCode, CloseRecord, WebSocketCloseMiddleware
from closeguard.prometheus import PrometheusCloseMetrics


def code_of(record: CloseRecord) -> int | None:
    return record.code


app = Starlette()
app.add_middleware(WebSocketCloseMiddleware)
normal: int = CloseCode.NORMAL_CLOSURE
reveal_type(WebSocketCloseMiddleware)
reveal_type(PrometheusCloseMetrics)
"""


def test_mypy_strict_reads_the_wheel_s_types(wheel: Path, tmp_path: Path) -> None:
    """A user's module type-checks against the installed wheel (py.typed), beside the project's
    own ``middleware``: the revealed types are closeguard's classes, not Any."""
    python = fresh_venv(tmp_path / "venv")
    pip(python, "install", "--no-deps", "--no-index", str(wheel))
    project = tmp_path / "typed"
    user_project(project)
    (project / "main.py").write_text(TYPED_USER)
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MYPYPATH"}}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--strict", "--python-executable", str(python)),
            *("--cache-dir", str(project / ".mypy_cache"), "--no-error-summary", "main.py"),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    notes = done.stdout.splitlines()
    assert all(": note: Revealed type is " in line for line in notes), done.stdout
    assert "-> closeguard.asgi.WebSocketCloseMiddleware" in notes[0]
    assert "-> closeguard.prometheus.PrometheusCloseMetrics" in notes[1]
