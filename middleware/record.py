"""The one record closeguard writes for every WebSocket connection, however it ended."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["CloseRecord", "Initiator"]

#: Who ended the connection: the app's own close (or refusal); the client (its close, or a
#: connection lost); closeguard (1011, 1009, or 1000 for a forgotten close); or the server
#: (a shutdown it reports as 1012, or the app's task cancelled under it).
Initiator = Literal["app", "client", "middleware", "server"]


@dataclass(frozen=True, slots=True)
class CloseRecord:
    """How and why one WebSocket connection ended.

    ``code`` and ``reason`` are what went on the wire, or what the server reported for a
    disconnect; ``code`` is None when no Close frame is known to have gone out (a refused or
    failed handshake, a connection cut by a cancelled task, a close the server failed to send).
    Sizes count bytes on the wire: text as UTF-8.
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
        """The fields as a flat dict, in declaration order (no deep copy, unlike ``asdict``)."""
        return {name: getattr(self, name) for name in FIELD_NAMES}


FIELD_NAMES = tuple(field.name for field in fields(CloseRecord))
