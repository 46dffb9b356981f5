"""What may go on the wire in a WebSocket Close frame: RFC 6455 section 7.4 and the IANA registry.

This is the one module that knows the close-code ranges and the 123-byte reason rule; everything
else asks it. The same :func:`check_close` serves the strict mode (raise) and, through
:func:`substitute_close`, the lenient one (replace), so the two can never disagree.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import Any, NamedTuple

__all__ = [
    "MAX_REASON_BYTES",
    "POLICY_REASONS",
    "RETRY_CONTRACT",
    "CloseCode",
    "CloseContract",
    "CodeClass",
    "InvalidCloseCode",
    "InvalidCloseReason",
    "RetryAdvice",
    "check_close",
    "classify",
    "describe",
    "name_of",
    "substitute_close",
    "truncate_utf8",
]

#: A control frame carries at most 125 bytes of payload; two of them are the status code.
MAX_REASON_BYTES = 123


class CloseCode(IntEnum):
    """The status codes named by RFC 6455 section 7.4.1 and the IANA registry (1004 has no name)."""

    #: "indicates a normal closure, meaning that the purpose for which the connection was
    #: established has been fulfilled."
    NORMAL_CLOSURE = 1000
    #: "an endpoint is 'going away', such as a server going down or a browser having navigated
    #: away from a page."
    GOING_AWAY = 1001
    #: "an endpoint is terminating the connection due to a protocol error."
    PROTOCOL_ERROR = 1002
    #: "an endpoint ... has received a type of data it cannot accept."
    UNSUPPORTED_DATA = 1003
    #: Reported locally when a Close frame carried no status code. MUST NOT be sent.
    NO_STATUS_RCVD = 1005
    #: Reported locally when the connection closed without a Close frame. MUST NOT be sent.
    ABNORMAL_CLOSURE = 1006
    #: "received data within a message that was not consistent with the type of the message."
    INVALID_FRAME_PAYLOAD_DATA = 1007
    #: "received a message that violates its policy"; the generic code when no better one fits.
    POLICY_VIOLATION = 1008
    #: "received a message that is too big for it to process."
    MESSAGE_TOO_BIG = 1009
    #: Sent by a client that expected the server to negotiate an extension.
    MANDATORY_EXTENSION = 1010
    #: "encountered an unexpected condition that prevented it from fulfilling the request."
    INTERNAL_ERROR = 1011
    #: IANA: the service is restarting; the client may reconnect.
    SERVICE_RESTART = 1012
    #: IANA: temporary server condition; the client should try again later.
    TRY_AGAIN_LATER = 1013
    #: IANA: a gateway or proxy received an invalid response from the upstream server.
    BAD_GATEWAY = 1014
    #: Reported locally when the TLS handshake failed. MUST NOT be sent.
    TLS_HANDSHAKE = 1015


class CodeClass(Enum):
    """Where an integer falls in the close-code space, and so whether an endpoint may send it."""

    STANDARD = "defined by the standard"  # 1000-1003, 1007-1014: the named, sendable codes
    LOCAL_ONLY = "reserved for local use"
    RESERVED = "reserved for the standard"
    LIBRARY = "registered for libraries and frameworks"
    PRIVATE = "private use"
    OUT_OF_RANGE = "outside the close-code space"

    @property
    def may_be_sent(self) -> bool:
        return self in _SENDABLE_CLASSES


_SENDABLE_CLASSES = frozenset({CodeClass.STANDARD, CodeClass.LIBRARY, CodeClass.PRIVATE})

#: Codes an endpoint learns about but must never put in a Close frame (RFC 6455 7.4.1).
LOCAL_ONLY_CODES = frozenset(
    {CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE, CloseCode.TLS_HANDSHAKE}
)
#: The standard's codes an endpoint may send: 1000-1003 and 1007-1014.
STANDARD_SENDABLE_CODES = frozenset(CloseCode) - LOCAL_ONLY_CODES
#: 7.4.2: 1000-2999 belong to the standard, 3000-3999 to IANA registrations, 4000-4999 to apps.
STANDARD_RANGE = range(1000, 3000)
LIBRARY_RANGE = range(3000, 4000)
PRIVATE_RANGE = range(4000, 5000)

ALLOWED_CODES_TEXT = "send 1000-1003, 1007-1014 or 3000-4999"


class InvalidCloseCode(ValueError):
    """An app asked to close with a code that RFC 6455 forbids an endpoint to send."""

    def __init__(self, message: str, code: object) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # ``args`` holds the message alone, so the default would rebuild the error without
        # its code: a process pool could not send it back, nor ``copy`` copy it.
        return (type(self), (str(self), self.code), self.__dict__)


class InvalidCloseReason(ValueError):
    """An app asked to close with a reason that is not a str of at most 123 UTF-8 bytes."""

    def __init__(self, message: str, reason: object) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # ``args`` holds the message alone, so the default would rebuild the error without
        # its reason: a process pool could not send it back, nor ``copy`` copy it.
        return (type(self), (str(self), self.reason), self.__dict__)


def classify(code: int) -> CodeClass:
    """Place any integer in the close-code space."""
    if code in STANDARD_SENDABLE_CODES:
        return CodeClass.STANDARD
    if code in LOCAL_ONLY_CODES:
        return CodeClass.LOCAL_ONLY
    if code in STANDARD_RANGE:
        return CodeClass.RESERVED
    if code in LIBRARY_RANGE:
        return CodeClass.LIBRARY
    if code in PRIVATE_RANGE:
        return CodeClass.PRIVATE
    return CodeClass.OUT_OF_RANGE


def name_of(code: int) -> str | None:
    """The registry's name for ``code`` in words ("Normal Closure"), or None if it has none."""
    try:
        member = CloseCode(code)
    except ValueError:
        return None
    return member.name.replace("_", " ").title().replace("Tls", "TLS")


def describe(code: int) -> str:
    """Say in words what a code is, for logs, errors and the explorer page."""
    name = name_of(code)
    kind = classify(code).value
    return f"{code} ({kind})" if name is None else f"{code} {name} ({kind})"


def check_close(code: int, reason: str = "") -> None:
    """Raise unless ``code`` and ``reason`` may go on the wire in a Close frame."""
    # bool is an int; a close code of True is a bug, not 1.
    if not isinstance(code, int) or isinstance(code, bool):
        raise InvalidCloseCode(
            f"close code must be an int, got {type(code).__name__} {code!r}; {ALLOWED_CODES_TEXT}",
            code,
        )
    kind = classify(code)
    if not kind.may_be_sent:
        raise InvalidCloseCode(f"close code {code} is {kind.value}; {ALLOWED_CODES_TEXT}", code)
    if not isinstance(reason, str):
        raise InvalidCloseReason(
            f"close reason must be a str, got {type(reason).__name__}; "
            f"send a str of at most {MAX_REASON_BYTES} UTF-8 bytes",
            reason,
        )
    # Most reasons are short ASCII: their length is their size, and nothing is encoded.
    if reason.isascii() and len(reason) <= MAX_REASON_BYTES:
        return
    try:
        size = len(reason.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidCloseReason(
            f"close reason is not valid UTF-8 (it holds a lone surrogate at index {exc.start}); "
            f"send a str of at most {MAX_REASON_BYTES} UTF-8 bytes",
            reason,
        ) from None
    if size > MAX_REASON_BYTES:
        raise InvalidCloseReason(
            f"close reason is {size} bytes in UTF-8 ({len(reason)} characters); "
            f"the limit is {MAX_REASON_BYTES} bytes",
            reason,
        )


def truncate_utf8(text: str, limit: int = MAX_REASON_BYTES) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character.

    Lone surrogates, which UTF-8 cannot carry, become ``?`` first.
    """
    encoded = text.encode("utf-8", "replace") if not text.isascii() else text.encode("ascii")
    if len(encoded) <= limit:
        return encoded.decode("utf-8")
    # Dropping a partial character at the cut is what "ignore" does at the end of the bytes.
    return encoded[:limit].decode("utf-8", "ignore")


def substitute_close(code: object, reason: object) -> tuple[int, str]:
    """The close to send instead of an invalid one, in ``invalid_close="replace"`` mode.

    1005 means "no status", so its honest substitute is a plain 1000; any other invalid code
    says the app went wrong, which is 1011. A reason is kept as far as the rules allow.
    """
    if isinstance(code, int) and not isinstance(code, bool) and classify(code).may_be_sent:
        new_code = code
    elif code == CloseCode.NO_STATUS_RCVD:
        new_code = CloseCode.NORMAL_CLOSURE
    else:
        new_code = CloseCode.INTERNAL_ERROR
    new_reason = truncate_utf8(reason) if isinstance(reason, str) else ""
    return int(new_code), new_reason


# The retry contract ---------------------------------------------------------------------------


class RetryAdvice(Enum):
    """What a client should do after one of closeguard's closes (or refusals)."""

    #: The service is fine, this connection ended: open a new one now, after a random wait
    #: of up to a second or so, so that the clients ended together do not return together.
    RECONNECT = "reconnect now, with jitter"
    #: The service is busy or going away: retry with exponential backoff and full jitter.
    BACK_OFF = "back off and retry"
    #: The client did something the service will not take: retrying the same thing gets the
    #: same close. Change something first (authenticate, send less) or give up.
    DO_NOT_RETRY = "do not retry without a change"


class CloseContract(NamedTuple):
    """One close (or refusal) that closeguard, its drain or a policy sends, and what it means."""

    #: The close code on the wire; None for a handshake refused with HTTP.
    code: int | None
    #: The HTTP status of a refused handshake; None for a close.
    http_status: int | None
    #: The reason on the wire (or the body of the refusal), a token a program can match.
    #: ``{limit}`` stands for the route's message size limit.
    reason: str
    #: Who sends it, and when.
    sent_when: str
    advice: RetryAdvice
    #: The code daphne's clients get instead (daphne sends only 1000 and 3000-4999, drops every
    #: reason, and cannot refuse a handshake with HTTP); 1006 where no Close frame comes.
    under_daphne: int


#: The reasons of the drain's and the policies' closes: the only reasons a metric may carry as
#: a label, since every other reason is the app's or the client's free text.
POLICY_REASONS = frozenset(
    {
        "draining",
        "first_message_timeout",
        "idle_timeout",
        "max_lifetime",
        "over_capacity",
        "rate_limited",
    }
)

_CONNECTION_CAP = "a connection cap (max_connections, max_connections_per_client) is full"
_NO_HTTP = ", where the server cannot refuse a handshake with HTTP"

#: Every close closeguard, its drain or a policy sends, with the advice a client should follow.
#: The docs' retry contract page is this table; tests/test_retry_contract.py keeps them equal.
RETRY_CONTRACT: tuple[CloseContract, ...] = (
    CloseContract(
        CloseCode.SERVICE_RESTART,
        None,
        "draining",
        "the drain, to each open connection, spread over drain_window",
        RetryAdvice.RECONNECT,
        1000,
    ),
    CloseContract(
        None,
        503,
        "draining",
        "the drain, to a new handshake (Retry-After: the window)",
        RetryAdvice.BACK_OFF,
        1000,
    ),
    CloseContract(
        CloseCode.TRY_AGAIN_LATER,
        None,
        "draining",
        "the drain, to a new handshake, just after accept" + _NO_HTTP,
        RetryAdvice.BACK_OFF,
        1000,
    ),
    CloseContract(
        CloseCode.GOING_AWAY,
        None,
        "idle_timeout",
        "idle_timeout: no data message from the client for that long",
        RetryAdvice.RECONNECT,
        1000,
    ),
    CloseContract(
        CloseCode.GOING_AWAY,
        None,
        "max_lifetime",
        "max_lifetime: the connection is that old (up to a tenth earlier, as jitter)",
        RetryAdvice.RECONNECT,
        1000,
    ),
    CloseContract(
        CloseCode.POLICY_VIOLATION,
        None,
        "first_message_timeout",
        "first_message_timeout: no data message within that long of accept",
        RetryAdvice.DO_NOT_RETRY,
        1000,
    ),
    CloseContract(
        CloseCode.POLICY_VIOLATION,
        None,
        "rate_limited",
        "max_messages_per_second or max_bytes_per_second: the client sent faster",
        RetryAdvice.DO_NOT_RETRY,
        1000,
    ),
    CloseContract(
        None,
        503,
        "over_capacity",
        _CONNECTION_CAP + " (Retry-After: 5)",
        RetryAdvice.BACK_OFF,
        1000,
    ),
    CloseContract(
        CloseCode.TRY_AGAIN_LATER,
        None,
        "over_capacity",
        _CONNECTION_CAP + ", just after accept" + _NO_HTTP,
        RetryAdvice.BACK_OFF,
        1000,
    ),
    CloseContract(
        CloseCode.SERVICE_RESTART,
        None,
        "",
        "the server cancels an open connection's task at its shutdown (hypercorn)",
        RetryAdvice.RECONNECT,
        1006,
    ),
    CloseContract(
        CloseCode.NORMAL_CLOSURE,
        None,
        "",
        "the app returned without closing",
        RetryAdvice.DO_NOT_RETRY,
        1000,
    ),
    CloseContract(
        CloseCode.MESSAGE_TOO_BIG,
        None,
        "message exceeds the limit of {limit} bytes",
        "the client sent a message over the route's max_message_size",
        RetryAdvice.DO_NOT_RETRY,
        1011,
    ),
    CloseContract(
        CloseCode.INTERNAL_ERROR,
        None,
        "internal error",
        "the app raised after accept",
        RetryAdvice.BACK_OFF,
        1011,
    ),
)
