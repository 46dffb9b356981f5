"""``middleware``, closeguard's first name, as the wheel installs it: another name for closeguard.

The package is ``closeguard`` (``from closeguard import ...``). This keeps code written against
the first name working where the project has no ``middleware`` module of its own: the name is
bound to the ``closeguard`` module itself, and ``middleware.x`` to ``closeguard.x``, so every
object is the same one.
"""

import sys

import closeguard
from closeguard import *  # noqa: F403 - the public API, as type checkers read this module
from closeguard._alias import alias_submodules

alias_submodules(__name__)
sys.modules[__name__] = closeguard
