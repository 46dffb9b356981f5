"""The close-code rules, checked against the project's table (shared/close-codes.md), not against
the module's own constants: every integer 0-65535 lands where the table says."""

from __future__ import annotations

import pytest

from closeguard import (
    MAX_REASON_BYTES,
    CloseCode,
    CodeClass,
    InvalidCloseCode,
    InvalidCloseReason,
    check_close,
    classify,
    describe,
    substitute_close,
    truncate_utf8,
)

# The table, written out as the shared document states it.
TABLE: list[tuple[range, CodeClass]] = [
    (range(0, 1000), CodeClass.OUT_OF_RANGE),
    (range(1000, 1004), CodeClass.STANDARD),
    (range(1004, 1005), CodeClass.RESERVED),
    (range(1005, 1007), CodeClass.LOCAL_ONLY),
    (range(1007, 1015), CodeClass.STANDARD),
    (range(1015, 1016), CodeClass.LOCAL_ONLY),
    (range(1016, 3000), CodeClass.RESERVED),
    (range(3000, 4000), CodeClass.LIBRARY),
    (range(4000, 5000), CodeClass.PRIVATE),
    (range(5000, 65536), CodeClass.OUT_OF_RANGE),
]
SENDABLE = {1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)}


def expected_class(code: int) -> CodeClass:
    return next(kind for span, kind in TABLE if code in span)


def test_table_covers_the_whole_code_space_once() -> None:
    covered = [code for span, _ in TABLE for code in span]
    assert covered == list(range(65536))


def test_every_code_is_classified_as_the_table_says() -> None:
    wrong = {c: classify(c) for c in range(65536) if classify(c) != expected_class(c)}
    assert wrong == {}


def test_check_close_accepts_exactly_the_sendable_codes() -> None:
    accepted = set()
    for code in range(65536):
        try:
            check_close(code, "")
        except InvalidCloseCode:
            continue
        accepted.add(code)
    assert accepted == SENDABLE


@pytest.mark.parametrize("code", [-1, 65536, 70000])
def test_integers_outside_sixteen_bits_are_rejected(code: int) -> None:
    assert classify(code) is CodeClass.OUT_OF_RANGE
    with pytest.raises(InvalidCloseCode):
        check_close(code)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (1005, "close code 1005 is reserved for local use; send 1000-1003, 1007-1014 or 3000-4999"),
        (1006, "close code 1006 is reserved for local use"),
        (1015, "close code 1015 is reserved for local use"),
        (1004, "close code 1004 is reserved for the standard"),
        (2999, "close code 2999 is reserved for the standard"),
        (999, "close code 999 is outside the close-code space"),
        (5000, "close code 5000 is outside the close-code space"),
    ],
)
def test_code_errors_name_the_value_and_what_is_allowed(code: int, words: str) -> None:
    with pytest.raises(InvalidCloseCode) as info:
        check_close(code, "bye")
    assert words in str(info.value)
    assert "1000-1003, 1007-1014 or 3000-4999" in str(info.value)
    assert info.value.code == code
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("code", ["1000", 1000.0, None, True])
def test_a_code_that_is_not_an_int_is_rejected(code: object) -> None:
    with pytest.raises(InvalidCloseCode, match="must be an int"):
        check_close(code, "")  # type: ignore[arg-type]


def test_close_code_names_follow_the_rfc_and_iana() -> None:
    assert CloseCode.NORMAL_CLOSURE.value == 1000
    assert CloseCode.INTERNAL_ERROR.value == 1011
    assert CloseCode.SERVICE_RESTART.value == 1012
    assert CloseCode.BAD_GATEWAY.value == 1014
    assert CloseCode.TLS_HANDSHAKE.value == 1015
    assert sorted(CloseCode) == [*range(1000, 1004), *range(1005, 1016)]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (1000, "1000 Normal Closure (defined by the standard)"),
        (1006, "1006 Abnormal Closure (reserved for local use)"),
        (1015, "1015 TLS Handshake (reserved for local use)"),
        (1004, "1004 (reserved for the standard)"),
        (3001, "3001 (registered for libraries and frameworks)"),
        (4321, "4321 (private use)"),
        (70000, "70000 (outside the close-code space)"),
    ],
)
def test_describe_says_what_a_code_is(code: int, text: str) -> None:
    assert describe(code) == text


# Reasons ----------------------------------------------------------------------------------


def test_reason_of_123_ascii_bytes_passes_and_124_fails() -> None:
    check_close(1000, "a" * MAX_REASON_BYTES)
    with pytest.raises(InvalidCloseReason) as info:
        check_close(1000, "a" * 124)
    assert "124 bytes" in str(info.value)
    assert "limit is 123 bytes" in str(info.value)


def test_reason_limit_counts_utf8_bytes_not_characters() -> None:
    # 61 * 2 + 1 = 123 bytes: allowed. 62 * 2 = 124 bytes in only 62 characters: refused.
    check_close(1000, "é" * 61 + "a")
    with pytest.raises(InvalidCloseReason, match=r"124 bytes in UTF-8 \(62 characters\)"):
        check_close(1000, "é" * 62)


def test_multibyte_character_across_the_boundary() -> None:
    # 121 ASCII bytes then a 3-byte character: 124 bytes, the character straddling byte 123.
    reason = "a" * 121 + "€"
    with pytest.raises(InvalidCloseReason):
        check_close(4000, reason)
    cut = truncate_utf8(reason)
    assert cut == "a" * 121
    assert len(cut.encode()) <= MAX_REASON_BYTES


def test_four_byte_characters_are_cut_whole() -> None:
    reason = "😀" * 31  # 124 bytes
    with pytest.raises(InvalidCloseReason):
        check_close(1000, reason)
    assert truncate_utf8(reason) == "😀" * 30


@pytest.mark.parametrize("reason", ["\ud800", "ok\udfff", "a" * 10 + "\udc80"])
def test_lone_surrogates_are_rejected(reason: str) -> None:
    with pytest.raises(InvalidCloseReason, match="not valid UTF-8"):
        check_close(1000, reason)


def test_a_reason_that_is_not_a_str_is_rejected() -> None:
    with pytest.raises(InvalidCloseReason, match="must be a str, got list"):
        check_close(1008, [{"loc": "body"}])  # type: ignore[arg-type]


def test_the_reason_is_checked_after_the_code() -> None:
    with pytest.raises(InvalidCloseCode):
        check_close(1005, "a" * 500)


# Substitutes (invalid_close="replace") ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1005, "bye", (1000, "bye")),
        (1006, "bye", (1011, "bye")),
        (1015, "", (1011, "")),
        (999, "x", (1011, "x")),
        (5000, "x", (1011, "x")),
        ("4000", "x", (1011, "x")),
        (4000, "é" * 62, (4000, "é" * 61)),
        (1000, "\ud800", (1000, "?")),
        (1008, ["not", "a", "str"], (1008, "")),
    ],
)
def test_substitutes_are_always_sendable(
    code: object, reason: object, expected: tuple[int, str]
) -> None:
    replaced = substitute_close(code, reason)
    assert replaced == expected
    check_close(*replaced)
