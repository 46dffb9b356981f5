"""The one record closeguard writes for every WebSocket connection, however it ended."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Literal

__all__ = ["CloseRecord", "Initiator"]

#: Who ended the connection: the app's own close (or refusal), the peer or the server (anything
#: the server reports as a disconnect), or closeguard (1011, 1009, or 1000 for a forgotten close).
Initiator = Literal["app", "client", "middleware"]


@dataclass(frozen=True, slots=True)
class CloseRecord:
    """How and why one WebSocket connection ended.

    ``code`` and ``reason`` are what went on the wire, or what the server reported for a
    disconnect; ``code`` is None when no Close frame could be sent (a refused or failed
    handshake, or a connection cut by a cancelled task).
    """

    connection_id: str
    path: str
    client: str | None
    accepted: bool
    code: int | None
    reason: str
    initiator: Initiator
    #: The code the app asked for when closeguard rejected or replaced its close.
    requested_code: int | None
    #: Why closeguard rejected or replaced the app's close, in words.
    violation: str | None
    #: Qualified name of the exception that ended the app, if one did.
    exception: str | None
    #: For a handshake the app refused: 403 for a close before accept (the ASGI spec's status),
    #: or the status of the app's denial response.
    http_status: int | None
    duration: float
    messages_received: int
    messages_sent: int
    bytes_received: int
    bytes_sent: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a flat dict, cheaper than :func:`dataclasses.asdict` (no deep copy)."""
        return dict(zip(FIELD_NAMES, _all_fields(self), strict=True))


FIELD_NAMES = tuple(field.name for field in fields(CloseRecord))
_all_fields = attrgetter(*FIELD_NAMES)
