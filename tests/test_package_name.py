"""``from closeguard import ...`` works in a project with its own ``middleware.py``, installed from
the wheel and installed editable (as this checkout is); ``from middleware import ...`` still works
where nothing shadows it, and gives the very same objects.

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

import closeguard
import closeguard.prometheus
import pytest

import middleware
import middleware.prometheus

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "middleware"
QUIET = ("--quiet", "--disable-pip-version-check")
#: The layout an install exposes: closeguard/ (links to PACKAGE's files) and middleware/.
NAMES = PACKAGE / "_names"

#: A project's own middleware module, as Django and FastAPI projects often have.
PROJECT_MIDDLEWARE = '''"""This project's own middleware, nothing to do with closeguard."""

OWNER = "project"
'''

#: A user's program: closeguard imported by its name beside the project's middleware.py, a
#: WebSocket driven through Starlette's TestClient, and what it saw printed as JSON.
PROGRAM = """
import json
import sys

import middleware
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import closeguard
import closeguard.asgi
import closeguard.prometheus
from closeguard import CloseCode, CloseRecord, WebSocketCloseMiddleware

records = []


async def fails(websocket):
    await websocket.accept()
    await websocket.send_text("hi")
    raise RuntimeError("a bug")


app = Starlette(routes=[WebSocketRoute("/ws", fails)])
app.add_middleware(WebSocketCloseMiddleware, on_close=records.append, reraise=False)
with TestClient(app) as client, client.websocket_connect("/ws") as websocket:
    first = websocket.receive_text()
    try:
        websocket.receive_text()
    except WebSocketDisconnect as ended:
        close = [ended.code, ended.reason]

json.dump(
    {
        "project_middleware": getattr(middleware, "OWNER", None),
        "closeguard_file": closeguard.__file__,
        "first": first,
        "close": close,
        "record": [records[0].code, type(records[0]).__module__],
        "code_is_enum": close[0] == CloseCode.INTERNAL_ERROR,
        "record_class_is_api": type(records[0]) is CloseRecord,
        "prometheus": closeguard.prometheus.__name__,
        "modules": sorted(name for name in sys.modules if name.startswith("closeguard")),
    },
    sys.stdout,
)
"""

#: Where nothing shadows ``middleware``: the first name gives closeguard's own objects.
OLD_NAME_PROGRAM = """
import json
import sys

import closeguard
import middleware
import middleware.prometheus
from middleware import WebSocketCloseMiddleware
from middleware.record import CloseRecord

json.dump(
    {
        "middleware_file": middleware.__file__,
        "same_class": WebSocketCloseMiddleware is closeguard.WebSocketCloseMiddleware,
        "same_record": CloseRecord is closeguard.CloseRecord,
        "same_submodule": middleware.prometheus is closeguard.prometheus,
        "same_all": middleware.__all__ == closeguard.__all__,
        "module": WebSocketCloseMiddleware.__module__,
    },
    sys.stdout,
)
"""

#: A user's typed module: mypy --strict must see closeguard's real types through either name.
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


def run_python(python: Path | str, script: Path) -> dict[str, Any]:
    """Run ``script`` as a user would (``python script.py``, its folder first on sys.path)."""
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


def project(directory: Path, program: str, *, shadowed: bool) -> Path:
    """A project folder with ``program`` as its main script, and its own middleware.py."""
    directory.mkdir()
    if shadowed:
        (directory / "middleware.py").write_text(PROJECT_MIDDLEWARE)
    script = directory / "main.py"
    script.write_text(program)
    return script


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


@pytest.fixture(scope="module")
def wheel_python(wheel: Path) -> Path:
    """A venv's python with the wheel installed, nothing else of ours.

    The venv has no pip (this one installs into it) and reaches its dependencies through a .pth
    file naming this venv's site-packages, whose own .pth files (the editable install's) Python
    does not read from there.
    """
    venv = wheel.parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = ["install", *QUIET, "--no-deps", "--no-index", str(wheel)]
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), *install], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_wheel_holds_closeguard_and_the_alias_only(wheel: Path) -> None:
    """Every file of the package under closeguard/, the small middleware alias, nothing else
    (no app/, no tests/, no second copy of a module)."""
    with zipfile.ZipFile(wheel) as archive:
        names = {name for name in archive.namelist() if ".dist-info/" not in name}
    expected = {f"closeguard/{path.as_posix()}" for path in package_files(PACKAGE)}
    alias = {"__init__.py", "py.typed", "prometheus.pyi", "opentelemetry.pyi"}
    assert names == expected | {f"middleware/{name}" for name in alias}


def test_wheel_serves_closeguard_beside_a_project_middleware_module(
    wheel_python: Path, tmp_path: Path
) -> None:
    seen = run_python(wheel_python, project(tmp_path / "app", PROGRAM, shadowed=True))
    assert seen["project_middleware"] == "project"
    assert Path(seen["closeguard_file"]).is_relative_to(wheel_python.parent.parent)
    assert seen["first"] == "hi"
    assert seen["close"] == [1011, "internal error"]
    assert seen["record"] == [1011, "closeguard.record"]
    assert seen["code_is_enum"]
    assert seen["record_class_is_api"]
    assert seen["prometheus"] == "closeguard.prometheus"


def test_wheel_keeps_the_first_name_where_nothing_shadows_it(
    wheel_python: Path, tmp_path: Path
) -> None:
    seen = run_python(wheel_python, project(tmp_path / "old", OLD_NAME_PROGRAM, shadowed=False))
    assert Path(seen["middleware_file"]).is_relative_to(wheel_python.parent.parent)
    assert [seen["same_class"], seen["same_record"], seen["same_submodule"]] == [True] * 3
    assert seen["same_all"]
    assert seen["module"] == "closeguard.asgi"


def test_editable_install_serves_closeguard_beside_a_project_middleware_module(
    tmp_path: Path,
) -> None:
    seen = run_python(sys.executable, project(tmp_path / "app", PROGRAM, shadowed=True))
    assert seen["project_middleware"] == "project"
    # The checkout's own file, so an edit shows without reinstalling.
    assert Path(seen["closeguard_file"]).resolve() == PACKAGE / "__init__.py"
    assert seen["close"] == [1011, "internal error"]
    assert seen["record"] == [1011, "closeguard.record"]
    assert seen["prometheus"] == "closeguard.prometheus"


def test_editable_install_keeps_the_first_name(tmp_path: Path) -> None:
    seen = run_python(sys.executable, project(tmp_path / "old", OLD_NAME_PROGRAM, shadowed=False))
    assert Path(seen["middleware_file"]).resolve().parent == PACKAGE
    assert [seen["same_class"], seen["same_record"], seen["same_submodule"]] == [True] * 3
    assert seen["same_all"]
    assert seen["module"] == "closeguard.asgi"


def test_both_names_in_one_process_are_one_package() -> None:
    # As objects: mypy reads a checkout's two names as two copies (docs/contributing.md).
    old: object = middleware.WebSocketCloseMiddleware
    assert old is closeguard.WebSocketCloseMiddleware
    assert middleware.prometheus is closeguard.prometheus
    assert middleware.__all__ == closeguard.__all__
    assert [
        name
        for name in closeguard.__all__
        if getattr(middleware, name) is not getattr(closeguard, name)
    ] == []
    # Every module file is loaded once: the first name's submodules are closeguard's objects.
    loaded: dict[str, set[int]] = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in {"closeguard", "middleware"} and name != "middleware":
            loaded.setdefault(str(Path(module.__file__ or name).resolve()), set()).add(id(module))
    assert loaded
    assert {path: ids for path, ids in loaded.items() if len(ids) > 1} == {}


def package_files(root: Path) -> set[Path]:
    """The files under ``root`` that make the package: modules and py.typed, by relative path."""
    return {
        path.relative_to(root)
        for path in root.rglob("*")
        if (path.suffix == ".py" or path.name == "py.typed")
        and "__pycache__" not in path.parts
        and path.relative_to(root).parts[0] != "_names"
    }


def test_the_installed_layout_links_every_module() -> None:
    """middleware/_names/closeguard/ is what both installs expose as closeguard: a link to each
    file of the package. A new module without its link would be missing from the wheel."""
    layout = NAMES / "closeguard"
    missing = package_files(PACKAGE) - package_files(layout)
    how = "; ".join(f"ln -s {'../' * (len(m.parts) + 1)}{m} {layout / m}" for m in missing)
    assert not missing, f"link each new module into the installed layout: {how}"
    assert package_files(layout) == package_files(PACKAGE)
    for name in package_files(layout):
        assert (layout / name).is_symlink(), name
        assert (layout / name).resolve() == PACKAGE / name


#: Code typed against the first name, as the docs taught it before: the same types.
TYPED_OLD_USER = """
from middleware import CloseRecord, WebSocketCloseMiddleware
from middleware.prometheus import PrometheusCloseMetrics

import closeguard

record: closeguard.CloseRecord | None = None
mine: CloseRecord | None = record
reveal_type(WebSocketCloseMiddleware)
reveal_type(PrometheusCloseMetrics)
"""


@pytest.mark.parametrize("install", ["wheel", "editable"])
def test_mypy_strict_reads_closeguard_types(
    install: str, wheel_python: Path, tmp_path: Path
) -> None:
    """A user's module type-checks against the installed package, beside its own middleware.py
    for the wheel; the revealed types are closeguard's own classes, not Any."""
    python = wheel_python if install == "wheel" else Path(sys.executable)
    script = project(tmp_path / "typed", TYPED_USER, shadowed=install == "wheel")
    notes = mypy_notes(python, script)
    assert "-> closeguard.asgi.WebSocketCloseMiddleware" in notes[0]
    assert "-> closeguard.prometheus.PrometheusCloseMetrics" in notes[1]


def test_mypy_strict_reads_the_wheel_s_first_name_as_closeguard(
    wheel_python: Path, tmp_path: Path
) -> None:
    """Where nothing shadows it, ``middleware`` type-checks as the same package: its classes are
    closeguard's, so a value crosses between the names."""
    notes = mypy_notes(wheel_python, project(tmp_path / "old", TYPED_OLD_USER, shadowed=False))
    assert "-> closeguard.asgi.WebSocketCloseMiddleware" in notes[0]
    assert "-> closeguard.prometheus.PrometheusCloseMetrics" in notes[1]


def mypy_notes(python: Path, script: Path) -> list[str]:
    """``mypy --strict`` on ``script`` against ``python``'s packages: its reveal_type notes,
    after checking that it reported nothing else."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MYPYPATH"}}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--strict", "--python-executable", str(python)),
            *("--cache-dir", str(script.parent / ".mypy_cache"), "--no-error-summary", script.name),
        ],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    notes = done.stdout.splitlines()
    assert all(": note: Revealed type is " in line for line in notes), done.stdout
    return notes
