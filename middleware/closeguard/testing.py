"""Close records in an app's own tests: an ``on_close`` hook that keeps what it is given.

``CloseRecords`` is a list of :class:`~closeguard.CloseRecord` that is also a hook: mount it as
``on_close=records`` (beside other hooks, ``on_close=[records, mine]``) in the app a test makes,
and the test asserts on how each connection ended as easily as on the close code it got::

    records = CloseRecords()
    app = create_app(on_close=records)
    ...  # connect, send, get the close
    assert records.one().exception == "RuntimeError"

In process (Starlette's ``TestClient``, httpx-ws's ASGI transport) a connection's record is in
the list once the client's connection block has ended. Under a server in another thread or
process the client can see the close before the record is written: :meth:`CloseRecords.wait_for`
waits for it. The list is not cleared between connections; make one per test (a fixture).
"""

from __future__ import annotations

import time

from .record import CloseRecord

__all__ = ["CloseRecords"]


class CloseRecords(list[CloseRecord]):
    """An ``on_close`` hook that keeps every record it is given, in order.

    Appending is atomic, so a server thread may call it while the test reads it.
    """

    def __call__(self, record: CloseRecord) -> None:
        self.append(record)

    def one(self) -> CloseRecord:
        """The one record kept so far; :class:`AssertionError` showing them if there is not
        exactly one (every connection writes exactly one)."""
        if len(self) != 1:
            raise AssertionError(f"expected exactly one close record, got {len(self)}: {self!r}")
        return self[0]

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[CloseRecord]:
        """Wait until at least ``count`` records are kept (a server in another thread writes
        them after its client saw the close); :class:`AssertionError` after ``timeout``
        seconds. Returns a copy of the records. Blocks: not for an app in the test's own
        event loop, whose records are kept by the time its client's block ends."""
        deadline = time.monotonic() + timeout
        while len(self) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} close record(s) within {timeout} s, got {len(self)}:"
                    f" {self!r}"
                )
            time.sleep(0.01)
        return list(self)
