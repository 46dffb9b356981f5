"""Close policies: when a connection must end, decided the same way under every server.

ASGI has no ping message, so what a middleware can watch is the data the client sends, the
clock and the number of connections. Each policy is off unless set, and each may be set per
route, as ``max_message_size`` is: a value, or a callable that takes the scope. Each close
carries a short reason a client program can match (:data:`POLICY_CLOSES`), with the code that
tells it whether to come back.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Hashable
from typing import NamedTuple, TypeAlias

from starlette.types import Scope

from .codes import CloseCode

__all__ = [
    "CAPACITY_RETRY_AFTER",
    "FIRST_MESSAGE_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_LIFETIME",
    "OVER_CAPACITY",
    "POLICY_CLOSES",
    "RATE_LIMITED",
    "Limits",
    "Policies",
    "Watch",
]

IDLE_TIMEOUT = "idle_timeout"
MAX_LIFETIME = "max_lifetime"
FIRST_MESSAGE_TIMEOUT = "first_message_timeout"
OVER_CAPACITY = "over_capacity"
RATE_LIMITED = "rate_limited"

#: Each policy's close: the code, by its reason token. A refused handshake gets HTTP 503 where
#: the server can answer with HTTP, else this code just after accept.
POLICY_CLOSES: dict[str, CloseCode] = {
    IDLE_TIMEOUT: CloseCode.GOING_AWAY,
    MAX_LIFETIME: CloseCode.GOING_AWAY,
    FIRST_MESSAGE_TIMEOUT: CloseCode.POLICY_VIOLATION,
    OVER_CAPACITY: CloseCode.TRY_AGAIN_LATER,
    RATE_LIMITED: CloseCode.POLICY_VIOLATION,
}

#: The ``Retry-After`` of a handshake refused over a connection cap, in seconds: clients should
#: back off further themselves (closeguard.codes says how).
CAPACITY_RETRY_AFTER = 5

#: How much earlier than ``max_lifetime`` a connection may end, as a share of it: connections
#: opened together (after a deploy) then end spread over this share, not together.
LIFETIME_JITTER = 0.1

#: The policies' clock, the event loop's own (asyncio's ``loop.time()`` reads it), so that a
#: timer and the deadline it was set for agree.
clock = time.monotonic

Seconds: TypeAlias = "float | Callable[[Scope], float | None] | None"
Count: TypeAlias = "int | Callable[[Scope], int | None] | None"
Rate: TypeAlias = "float | Callable[[Scope], float | None] | None"


class Limits(NamedTuple):
    """One connection's policies, each resolved for its scope (None: off)."""

    idle_timeout: float | None
    max_lifetime: float | None
    first_message_timeout: float | None
    #: Each rate (``max_messages_per_second``, ``max_bytes_per_second``) as a token bucket
    #: ``burst`` seconds of it deep (at least one message), kept as the time one message, or
    #: one byte, takes to come back (0: the rate is off) and the bucket's depth in that time.
    #: See :meth:`Watch.heard_from_client`.
    message_interval: float
    message_depth: float
    byte_interval: float
    byte_depth: float
    #: Whether a rate is set: the one question asked of every message.
    rated: bool

    @classmethod
    def of(
        cls,
        idle_timeout: float | None = None,
        max_lifetime: float | None = None,
        first_message_timeout: float | None = None,
        max_messages_per_second: float | None = None,
        max_bytes_per_second: float | None = None,
        burst: float = 1.0,
    ) -> Limits:
        message_interval, message_depth = _bucket(max_messages_per_second, burst)
        byte_interval, byte_depth = _bucket(max_bytes_per_second, burst)
        return cls(
            idle_timeout,
            max_lifetime,
            first_message_timeout,
            message_interval,
            message_depth,
            byte_interval,
            byte_depth,
            max_messages_per_second is not None or max_bytes_per_second is not None,
        )

    @property
    def watched(self) -> bool:
        """Whether anything is watched once the connection is open."""
        timed = (self.idle_timeout, self.max_lifetime, self.first_message_timeout)
        return self.rated or any(value is not None for value in timed)


def _bucket(rate: float | None, burst: float) -> tuple[float, float]:
    """A rate's interval, and its bucket's depth in seconds: ``burst`` seconds, and at least
    one interval. The depth is a hair deeper than that, so that a full bucket's last message
    is not lost to the rounding of the float sums that reach it."""
    if rate is None:
        return 0.0, 0.0
    interval = 1 / rate
    return interval, max(interval, burst) * (1 + 1e-9)


class Watch:
    """The clock of one open connection: its deadlines, and its rates of messages.

    Nothing here wakes up by itself: :meth:`next_deadline` says when a timer should look next,
    and a busy connection moves its idle deadline by a write, not by a new timer.
    """

    __slots__ = (
        "bytes_due",
        "first_due",
        "heard",
        "heard_at",
        "lifetime_due",
        "limits",
        "messages_due",
        "timer",
    )

    def __init__(self, limits: Limits) -> None:
        """Watch from now: the connection was just accepted."""
        now = clock()
        self.limits = limits
        jitter = random.random()
        self.lifetime_due = (
            None
            if limits.max_lifetime is None
            else now + limits.max_lifetime * (1 - LIFETIME_JITTER * jitter)
        )
        self.first_due = (
            None if limits.first_message_timeout is None else now + limits.first_message_timeout
        )
        self.heard = False
        self.heard_at = now
        #: When each bucket would be full again: now, for a full one.
        self.messages_due = now
        self.bytes_due = now
        #: The event loop's timer set for :meth:`next_deadline` (closeguard.deadlines).
        self.timer: asyncio.TimerHandle | None = None

    def heard_from_client(self, size: int) -> str | None:
        """A data message of ``size`` bytes came: None, or the policy it broke (the rate).

        Each token bucket is kept as the time it will be full again (the past, for a full
        one): a message pushes that time on by its cost, one interval or ``size`` byte
        intervals, and breaks the rate when it would lie more than the bucket's depth ahead.
        The same answers as counting tokens (a test holds them to it), in less arithmetic:
        252 ns a message with both rates on, against 357, measured.
        """
        now = clock()
        self.heard = True
        self.heard_at = now
        limits = self.limits
        if not limits.rated:
            return None
        if limits.message_interval:
            due = self.messages_due
            if due > now:
                due += limits.message_interval
                if due - now > limits.message_depth:
                    return RATE_LIMITED
            else:
                due = now + limits.message_interval
            self.messages_due = due
        if limits.byte_interval:
            due = self.bytes_due
            cost = size * limits.byte_interval
            if due > now:
                due += cost
            else:
                due = now + cost
            if due - now > limits.byte_depth:  # one message may be more than the bucket holds
                return RATE_LIMITED
            self.bytes_due = due
        return None

    def due(self) -> str | None:
        """The policy whose deadline has passed, if any."""
        now = clock()
        if self.first_due is not None and not self.heard and now >= self.first_due:
            return FIRST_MESSAGE_TIMEOUT
        if self.lifetime_due is not None and now >= self.lifetime_due:
            return MAX_LIFETIME
        idle = self.limits.idle_timeout
        if idle is not None and now >= self.heard_at + idle:
            return IDLE_TIMEOUT
        return None

    def next_deadline(self) -> float | None:
        """When a timer should look next: the earliest deadline not yet moot."""
        deadlines = [self.lifetime_due]
        if not self.heard:
            deadlines.append(self.first_due)
        if self.limits.idle_timeout is not None:
            deadlines.append(self.heard_at + self.limits.idle_timeout)
        found = [deadline for deadline in deadlines if deadline is not None]
        return min(found) if found else None


class Policies:
    """One middleware's policies, as its options set them, and the connections it counts."""

    def __init__(
        self,
        *,
        idle_timeout: Seconds,
        max_lifetime: Seconds,
        first_message_timeout: Seconds,
        max_connections: Count,
        max_connections_per_client: Count,
        client_key: Callable[[Scope], Hashable] | None,
        max_messages_per_second: Rate,
        max_bytes_per_second: Rate,
        rate_burst: float,
    ) -> None:
        for name, seconds in (
            ("idle_timeout", idle_timeout),
            ("max_lifetime", max_lifetime),
            ("first_message_timeout", first_message_timeout),
            ("max_messages_per_second", max_messages_per_second),
            ("max_bytes_per_second", max_bytes_per_second),
            ("rate_burst", rate_burst),
        ):
            check_positive(name, seconds)
        if callable(rate_burst):
            raise TypeError(f"rate_burst must be a number of seconds, got {rate_burst!r}")
        check_count("max_connections", max_connections)
        check_count("max_connections_per_client", max_connections_per_client)
        if client_key is not None and not callable(client_key):
            raise TypeError(
                f"client_key must be a callable scope -> a key (say, a user id), got {client_key!r}"
            )
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.first_message_timeout = first_message_timeout
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client
        self.client_key = client_key if client_key is not None else client_host
        self.max_messages_per_second = max_messages_per_second
        self.max_bytes_per_second = max_bytes_per_second
        self.rate_burst = float(rate_burst)
        #: Connections open now, by key: ("all",), ("path", path), ("client", key).
        self.open: dict[Hashable, int] = {}
        clock_options = (idle_timeout, max_lifetime, first_message_timeout)
        rates = (max_messages_per_second, max_bytes_per_second)
        #: The limits every connection shares when no option depends on the scope: one tuple,
        #: not one per connection.
        self.per_scope = any(map(callable, clock_options + rates))
        self.shared_limits = None if self.per_scope else self._limits_for({})
        self.capped = max_connections is not None or max_connections_per_client is not None

    def limits_for(self, scope: Scope) -> Limits | None:
        """This connection's clock policies, or None when none applies to it."""
        return self._limits_for(scope) if self.per_scope else self.shared_limits

    def _limits_for(self, scope: Scope) -> Limits | None:
        limits = Limits.of(
            resolve(self.idle_timeout, scope, "idle_timeout"),
            resolve(self.max_lifetime, scope, "max_lifetime"),
            resolve(self.first_message_timeout, scope, "first_message_timeout"),
            resolve(self.max_messages_per_second, scope, "max_messages_per_second"),
            resolve(self.max_bytes_per_second, scope, "max_bytes_per_second"),
            self.rate_burst,
        )
        return limits if limits.watched else None

    def admit(self, scope: Scope) -> tuple[Hashable, ...] | None:
        """Count a new connection under each cap that applies to it, and return the keys it
        was counted under; None, counting nothing, when a cap is full."""
        if not self.capped:
            return ()
        caps: list[tuple[Hashable, int]] = []
        total = resolve_count(self.max_connections, scope, "max_connections")
        if total is not None:
            # A callable cap is a route's own: it counts the connections of that path.
            key: Hashable = (
                ("path", scope.get("path")) if callable(self.max_connections) else ("all",)
            )
            caps.append((key, total))
        per_client = resolve_count(
            self.max_connections_per_client, scope, "max_connections_per_client"
        )
        if per_client is not None:
            caps.append((("client", self.client_key(scope)), per_client))
        if any(self.open.get(key, 0) >= cap for key, cap in caps):
            return None
        for key, _ in caps:
            self.open[key] = self.open.get(key, 0) + 1
        return tuple(key for key, _ in caps)

    def release(self, keys: tuple[Hashable, ...]) -> None:
        for key in keys:
            left = self.open.get(key, 0) - 1
            if left > 0:
                self.open[key] = left
            else:
                self.open.pop(key, None)


def client_host(scope: Scope) -> Hashable:
    """The client's address as the server saw it (behind a proxy: X-Forwarded-For's, where the
    server trusts it), without the port: one client, many connections."""
    client = scope.get("client")
    return client[0] if isinstance(client, (tuple, list)) and client else None


def check_positive(name: str, value: object) -> None:
    if value is None or callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(
            f"{name} must be a number above 0, a callable scope -> number | None, "
            f"or None for off; got {value!r}"
        )


def check_count(name: str, value: object) -> None:
    if value is None or callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a whole number from 1, a callable scope -> int | None, "
            f"or None for off; got {value!r}"
        )


def resolve(value: object, scope: Scope, name: str) -> float | None:
    """A policy's value for one connection; a callable's answer is checked as the option is."""
    answer = value(scope) if callable(value) else value
    check_positive(name, answer)
    return None if answer is None else float(answer)  # type: ignore[arg-type]


def resolve_count(value: object, scope: Scope, name: str) -> int | None:
    answer = value(scope) if callable(value) else value
    check_count(name, answer)
    return answer  # type: ignore[return-value]
