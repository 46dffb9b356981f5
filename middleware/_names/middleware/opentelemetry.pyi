# What type checkers read: closeguard's module, which the alias imports at run time.
from closeguard.opentelemetry import *  # noqa: F403
