"""The retry contract (closeguard.RETRY_CONTRACT) against the code that sends the closes: every
reason the drain and the policies put on the wire has its row with the code they send, every
code may go on the wire, every reason fits in a Close frame."""

from __future__ import annotations

from closeguard import RETRY_CONTRACT, CloseCode, RetryAdvice, check_close, policies
from closeguard.asgi import CAPACITY_RETRY_AFTER
from closeguard.codes import POLICY_REASONS
from closeguard.connection import DRAINING_REASON, INTERNAL_ERROR_REASON, SHUTDOWN_REASON
from closeguard.options import MAX_LIMIT


def closes() -> dict[str, set[int | None]]:
    """Each reason's codes in the table (None: an HTTP refusal)."""
    found: dict[str, set[int | None]] = {}
    for row in RETRY_CONTRACT:
        found.setdefault(row.reason, set()).add(row.code)
    return found


def test_every_policy_close_has_its_row_with_the_code_the_policy_sends() -> None:
    table = closes()
    for reason, code in policies.POLICY_CLOSES.items():
        assert code in table[reason], reason
    # The caps refuse with HTTP 503 where the server can, as the drain does.
    assert table[policies.OVER_CAPACITY] == {None, CloseCode.TRY_AGAIN_LATER}
    assert table[DRAINING_REASON] == {None, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER}
    assert table[SHUTDOWN_REASON] == {CloseCode.SERVICE_RESTART}
    assert table[INTERNAL_ERROR_REASON] == {CloseCode.INTERNAL_ERROR}
    assert table[""] == {CloseCode.NORMAL_CLOSURE}


def test_the_reasons_a_metric_may_carry_are_the_drain_s_and_the_policies() -> None:
    assert {*policies.POLICY_CLOSES, DRAINING_REASON} == POLICY_REASONS


def test_every_row_may_go_on_the_wire() -> None:
    for row in RETRY_CONTRACT:
        # The 1009's reason names the route's limit: the longest one must fit too.
        reason = row.reason.format(limit=MAX_LIMIT)
        assert (row.code is None) != (row.http_status is None), row
        if row.code is not None:
            check_close(row.code, reason)
        check_close(row.under_daphne if row.under_daphne != 1006 else 1000, reason)
        assert len(reason.encode()) <= 123


def test_refusals_say_when_to_come_back() -> None:
    refusals = [row for row in RETRY_CONTRACT if row.http_status is not None]
    assert {row.http_status for row in refusals} == {503}
    assert all(row.advice is RetryAdvice.BACK_OFF for row in refusals)
    assert f"Retry-After: {CAPACITY_RETRY_AFTER}" in next(
        row.sent_when for row in refusals if row.reason == policies.OVER_CAPACITY
    )


def test_daphne_s_clients_get_only_what_daphne_sends() -> None:
    """1000 and 3000-4999 from closeguard, 1011 from daphne's own error path, 1006 (no Close
    frame) when daphne stops."""
    assert {row.under_daphne for row in RETRY_CONTRACT} <= {1000, 1006, 1011}


def test_one_row_per_close() -> None:
    keys = [(row.code, row.http_status, row.reason) for row in RETRY_CONTRACT]
    assert len(keys) == len(set(keys))
