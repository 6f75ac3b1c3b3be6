"""Text from callers: whether PostgreSQL can store it, and how much of it an error message may quote; the
numbers and times read from it, refused here when PostgreSQL could not take them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

ECHO_LIMIT = 40
BIGINT_MAX = 2**63 - 1
_PLAIN_NUMBER = re.compile(r"0|[1-9][0-9]{0,18}")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def storable(text: str) -> bool:
    """PostgreSQL's text holds neither NUL nor an unpaired surrogate (which JSON's "\\ud800" can carry)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escaped(text: str) -> str:
    """Text with every character that could break a line, forge one, drive a terminal or hide what follows
    written as an escape (\\x0a, \\x1b, \\u202e): C0 and C1 controls, DEL, the line and paragraph
    separators, the bidirectional overrides and lone surrogates. Logs and error messages show input this way."""
    return _UNSAFE.sub(_escape, text)


def shown(text: object) -> str:
    """A caller's input as an error message quotes it: escaped, and a short prefix, so no answer or log line
    carries a control character or a whole document (or a secret pasted into the wrong field) back."""
    whole = str(text)
    quoted = escaped(whole)
    if len(quoted) <= ECHO_LIMIT:
        return quoted
    kept, length = [], 0
    for character in whole:
        piece = escaped(character)
        if length + len(piece) > ECHO_LIMIT:
            break
        kept.append(piece)
        length += len(piece)
    return "".join(kept) + "…"


def plain_bigint(text: str) -> int:
    """A number as the server writes one: ASCII digits only, no sign, space, `_` or leading zero (all of which
    `int` takes, with other scripts' digits too), and no more than PostgreSQL's bigint holds."""
    if not _PLAIN_NUMBER.fullmatch(text) or int(text) > BIGINT_MAX:
        raise ValueError(f"'{shown(text)}' is not a whole number from 0 to {BIGINT_MAX}.")
    return int(text)


def storable_time(value: datetime) -> datetime:
    """A time PostgreSQL's timestamptz can take: the driver moves it to UTC, so it must stay within the years 1
    to 9999 there (0001-01-01T00:00:00+14:00 is in year 0 in UTC). A time without an offset is the server's
    local time, moved the same way."""
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("That time is outside the years 1 to 9999 once moved to UTC.") from None
    return value


def offset_time(text: str) -> datetime:
    """A time as the server writes one in a cursor: ISO 8601 with its UTC offset, and storable."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("A time needs its UTC offset.")
    return storable_time(value)
