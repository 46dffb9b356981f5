"""A Python client that follows closeguard's retry contract, on the websockets library.

websockets' own ``async for websocket in connect(url)`` retries only a failed handshake (a
connection error, HTTP 500, 502, 503, 504); once a connection was open, what a close means is
the caller's to decide. This loop decides by the contract: reconnect at once (after a short
random wait) on 1001 and 1012, back off on 1011, 1013 and a refused handshake, and stop on
anything else, above all 1008 (a policy the client broke: retrying breaks it again).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

#: The service is fine, this connection ended (idle_timeout, max_lifetime, a drain, a restart).
RECONNECT = frozenset({1001, 1006, 1012})
#: The service is busy or failing (over_capacity, an app's exception): wait longer each time.
BACK_OFF = frozenset({1011, 1013})
#: HTTP statuses of a refused handshake worth retrying; 503 is a drain's or a cap's refusal.
RETRY_STATUSES = frozenset({500, 502, 503, 504})


class Ended(NamedTuple):
    """Why the loop stopped: the last close (code, reason) or refusal (HTTP status)."""

    code: int | None
    reason: str
    status: int | None = None


Session = Callable[[ClientConnection], Awaitable[None]]


async def keep_connected(
    url: str,
    session: Session,
    *,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    stable_after: float = 10.0,
    max_attempts: int = 1_000,
) -> Ended:
    """Run ``session`` on a connection to ``url``, again after each close the contract says
    to come back from, until a close that says not to, or ``session`` returns (the caller is
    done: the connection is closed with 1000), or ``max_attempts`` connections were tried."""
    loop = asyncio.get_running_loop()
    failures = 0
    ended = Ended(None, "")
    for attempt in range(1, max_attempts + 1):
        opened_at = None
        try:
            async with connect(url) as websocket:
                opened_at = loop.time()
                await session(websocket)
                return Ended(1000, "")
        except InvalidStatus as refused:
            ended = Ended(None, "", refused.response.status_code)
            if ended.status not in RETRY_STATUSES:
                return ended
            backing_off = True
        except ConnectionClosed as closed:
            frame = closed.rcvd
            ended = Ended(1006, "") if frame is None else Ended(frame.code, frame.reason)
            if ended.code not in RECONNECT | BACK_OFF:
                return ended
            backing_off = ended.code in BACK_OFF
        except OSError:  # refused or unreachable: a server that is down
            ended, backing_off = Ended(1006, ""), True
        if attempt == max_attempts:
            break
        # A connection that lived a while starts the count again: its close is news, not a
        # sign that the service keeps failing.
        if opened_at is not None and loop.time() - opened_at > stable_after:
            failures = 0
        # Full jitter: a random wait up to a ceiling, the base for a reconnect, doubling with
        # each failure when backing off, so that clients closed together come back spread out.
        ceiling = base_delay
        if backing_off:
            ceiling = min(max_delay, base_delay * 2**failures)
            failures += 1
        await asyncio.sleep(random.uniform(0, ceiling))
    return ended
