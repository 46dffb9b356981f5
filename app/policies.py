"""The close policies the explorer shows: each on a route of its own, with values short enough
to watch (an idle connection ends after 2 s, not 2 min).

Each option is given in its callable form, scope -> value, which answers only for its own
route and None (off) everywhere else, so the rest of the service runs with no policy at all.
The codes and reason tokens are closeguard's own (:data:`closeguard.policies.POLICY_CLOSES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypedDict, TypeVar

from starlette.routing import WebSocketRoute
from starlette.types import Scope

from closeguard.policies import (
    FIRST_MESSAGE_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_LIFETIME,
    OVER_CAPACITY,
    POLICY_CLOSES,
    RATE_LIMITED,
)

from .scenarios import echo

__all__ = ["DEMOS", "PREFIX", "RATE_BURST", "ROUTES", "Demo", "PolicyOptions", "options"]

#: Every policy route starts with this; the routes elsewhere have no policy.
PREFIX = "/ws/policy/"

#: The rates' burst, in seconds of each rate: 5 messages, or 1 KiB, at once. (One value for the
#: middleware: it matters only where a rate is set, which is on the rate routes alone.)
RATE_BURST = 1.0

T = TypeVar("T", int, float)


@dataclass(frozen=True)
class Demo:
    """One policy as the explorer shows it: its route, its option and value, and its close."""

    #: The route's last segment, and the id of the page's section for it.
    name: str
    #: The middleware option it sets, on this route only.
    option: str
    value: float
    #: The reason token the close carries (a refused handshake's, for a cap).
    reason: str

    @property
    def path(self) -> str:
        return PREFIX + self.name

    @property
    def code(self) -> int:
        """The close code, or the code a cap closes with where the server cannot answer a
        handshake with HTTP (under uvicorn a cap's refusal is HTTP 503)."""
        return int(POLICY_CLOSES[self.reason])

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "path": self.path, "code": self.code}


DEMOS = (
    Demo("idle", "idle_timeout", 2.0, IDLE_TIMEOUT),
    Demo("lifetime", "max_lifetime", 4.0, MAX_LIFETIME),
    Demo("first-message", "first_message_timeout", 2.0, FIRST_MESSAGE_TIMEOUT),
    Demo("message-rate", "max_messages_per_second", 5.0, RATE_LIMITED),
    Demo("byte-rate", "max_bytes_per_second", 1024.0, RATE_LIMITED),
    Demo("cap", "max_connections", 2, OVER_CAPACITY),
    Demo("cap-per-client", "max_connections_per_client", 2, OVER_CAPACITY),
)


class PolicyOptions(TypedDict):
    """The middleware's keyword options this module sets."""

    idle_timeout: Callable[[Scope], float | None]
    max_lifetime: Callable[[Scope], float | None]
    first_message_timeout: Callable[[Scope], float | None]
    max_messages_per_second: Callable[[Scope], float | None]
    max_bytes_per_second: Callable[[Scope], float | None]
    max_connections: Callable[[Scope], int | None]
    max_connections_per_client: Callable[[Scope], int | None]
    rate_burst: float


def _on(option: str, kind: type[T]) -> Callable[[Scope], T | None]:
    """The option's value on its demo's route, and None (off) on every other path."""
    [demo] = [demo for demo in DEMOS if demo.option == option]
    path, value = demo.path, kind(demo.value)

    def per_route(scope: Scope) -> T | None:
        return value if scope.get("path") == path else None

    return per_route


def options() -> PolicyOptions:
    """``WebSocketCloseMiddleware(app, **options())``: every demo's policy, each on its route."""
    return PolicyOptions(
        idle_timeout=_on("idle_timeout", float),
        max_lifetime=_on("max_lifetime", float),
        first_message_timeout=_on("first_message_timeout", float),
        max_messages_per_second=_on("max_messages_per_second", float),
        max_bytes_per_second=_on("max_bytes_per_second", float),
        max_connections=_on("max_connections", int),
        max_connections_per_client=_on("max_connections_per_client", int),
        rate_burst=RATE_BURST,
    )


#: The echo on every policy route: what the client sends comes back, until the policy ends it.
ROUTES = [WebSocketRoute(demo.path, echo) for demo in DEMOS]
