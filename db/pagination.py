"""Keyset pagination: opaque cursors that name a row's place in an ordering, never an offset."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from db.errors import DomainError, ErrorCode, Problem
from db.text import storable

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
NOT_GIVEN_OUT = "That cursor is not one this list gave out."


def page_size(first: int | None, *, least: int = 1, argument: str = "first") -> int:
    """`first` (or `last`, named by `argument`), or the default page size when not given; a list whose count
    is worth asking for alone takes `least=0`."""
    size = DEFAULT_PAGE_SIZE if first is None else first
    if not least <= size <= MAX_PAGE_SIZE:
        raise DomainError(
            Problem(
                ErrorCode.INVALID_INPUT, f"{argument} must be between {least} and {MAX_PAGE_SIZE}.", argument
            )
        )
    return size


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def cursor_values(cursor: str, *, argument: str = "after") -> list[str]:
    """The values a cursor holds, as text; a hand-made one is refused (as the argument named `argument`)."""
    bad = DomainError(Problem(ErrorCode.INVALID_INPUT, NOT_GIVEN_OUT, argument))
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (TypeError, ValueError, RecursionError):
        raise bad from None
    # Every cursor given out holds text PostgreSQL stores; JSON also holds numbers, lists, NUL, "\ud800".
    if not isinstance(values, list) or not all(
        isinstance(value, str) and storable(value) for value in values
    ):
        raise bad
    return values


def decode_cursor(
    cursor: str, *, parse: Sequence[Callable[[Any], Any]], argument: str = "after"
) -> list[Any]:
    """The values a cursor holds, each read by its parser; a cursor from another ordering or a hand-made one
    is refused (as the argument named `argument`)."""
    return read_values(cursor_values(cursor, argument=argument), parse=parse, argument=argument)


def read_values(values: list[str], *, parse: Sequence[Callable[[Any], Any]], argument: str) -> list[Any]:
    """A cursor's values, each read by its parser, or INVALID_INPUT."""
    bad = DomainError(Problem(ErrorCode.INVALID_INPUT, NOT_GIVEN_OUT, argument))
    if len(values) != len(parse):
        raise bad
    try:
        return [read(value) for read, value in zip(parse, values, strict=True)]
    except (TypeError, ValueError):
        raise bad from None
