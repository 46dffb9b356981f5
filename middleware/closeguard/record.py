"""The one record closeguard writes for every WebSocket connection, however it ended."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from .codes import POLICY_REASONS

__all__ = ["CloseRecord", "Initiator"]

#: Who ended the connection: the app's own close (or refusal); the client (its close, or a
#: connection lost); closeguard (1011, 1009, or 1000 for a forgotten close); or the server
#: (a shutdown it reports as 1012, or the app's task cancelled under it).
Initiator = Literal["app", "client", "middleware", "server"]


class CloseRecord(NamedTuple):
    """How and why one WebSocket connection ended.

    ``code`` and ``reason`` are what went on the wire, or what the server reported for a
    disconnect; ``code`` is None when no Close frame is known to have gone out (a refused or
    failed handshake, a connection cut by a cancelled task, a close the server failed to send).
    Sizes count bytes on the wire: text as UTF-8.

    A named tuple: immutable, since the log and every hook share one record, and built at a
    tuple's cost (a frozen dataclass's ``__init__`` took 1 µs more per connection, measured).
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
        """The fields as a dict, in declaration order: ``_asdict()`` by a public name."""
        return self._asdict()


FIELD_NAMES = CloseRecord._fields


def policy_of(record: CloseRecord) -> str | None:
    """The drain or policy that ended the connection (its reason token), or None. Only
    closeguard's own closes, and only the known tokens: a label never carries a reason the app
    or the client wrote, so the counter has a bounded number of series."""
    if record.initiator == "middleware" and record.reason in POLICY_REASONS:
        return record.reason
    return None
