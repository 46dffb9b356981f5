"""The recent close records, kept in memory so the explorer page can show the server's side.

Bounded: a busy server forgets the oldest first. The page finds a record by the connection id
closeguard gave the connection, or by a nonce it chose itself and put in the query string,
which is the only channel when the app closes before accept (no message can be sent then).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from closeguard import CloseRecord, describe

__all__ = ["NONCE_PATTERN", "RecentCloses"]

#: What a page-chosen nonce may look like; anything else is ignored, not stored.
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")


class RecentCloses:
    """The last ``size`` close records by connection id, and the nonces that point to them."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._nonces: OrderedDict[str, str] = OrderedDict()

    def remember_nonce(self, nonce: str | None, connection_id: str) -> None:
        """Map the page's nonce to closeguard's connection id (before the connection ends)."""
        if nonce is None or not NONCE_PATTERN.fullmatch(nonce):
            return
        self._nonces[nonce] = connection_id
        self._nonces.move_to_end(nonce)
        while len(self._nonces) > self.size:
            self._nonces.popitem(last=False)

    def add(self, record: CloseRecord) -> None:
        """The ``on_close`` hook: keep the record, with the close code described in words."""
        data = record.as_dict()
        data["code_description"] = None if record.code is None else describe(record.code)
        self._records[record.connection_id] = data
        while len(self._records) > self.size:
            self._records.popitem(last=False)

    def by_connection_id(self, connection_id: str) -> dict[str, Any] | None:
        return self._records.get(connection_id)

    def by_nonce(self, nonce: str) -> dict[str, Any] | None:
        connection_id = self._nonces.get(nonce)
        return None if connection_id is None else self._records.get(connection_id)
