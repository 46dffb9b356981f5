"""``middleware``, the package's first name, as an alias of ``closeguard``.

closeguard's modules are ``closeguard.*`` in every install, so logs, pickles and tracebacks say
``closeguard`` and a project's own ``middleware.py`` cannot hide them. Code written against the
first name still runs: wherever ``middleware`` is imported, its submodules are the very
``closeguard`` modules (``middleware.asgi is closeguard.asgi``), never a second copy with classes
of its own. docs/contributing.md ("The package's two names") shows how each install does it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["CANONICAL", "alias_submodules"]

CANONICAL = "closeguard"


class _SubmoduleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``<alias>.x`` and loads it as the module ``closeguard.x``."""

    def __init__(self, alias: str) -> None:
        self.prefix = alias + "."

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.prefix):
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns whatever sys.modules holds once this returns, so the
        # placeholder it made is simply replaced by the real module, left as it is.
        real = importlib.import_module(CANONICAL + "." + module.__name__[len(self.prefix) :])
        sys.modules[module.__name__] = real


def alias_submodules(alias: str) -> None:
    """Make every ``<alias>.x`` import give ``closeguard.x``; once per alias."""
    if any(isinstance(f, _SubmoduleAlias) and f.prefix == alias + "." for f in sys.meta_path):
        return
    # First, before the path finder would load the file a second time under the alias.
    sys.meta_path.insert(0, _SubmoduleAlias(alias))
