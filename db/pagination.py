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


def page_size(first: int | None) -> int:
    size = DEFAULT_PAGE_SIZE if first is None else first
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, f"first must be between 1 and {MAX_PAGE_SIZE}.", "first")
        )
    return size


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, parse: Sequence[Callable[[Any], Any]]) -> list[Any]:
    """The values a cursor holds, each read by its parser; a cursor from another ordering or a hand-made one
    is refused."""
    bad = DomainError(Problem(ErrorCode.INVALID_INPUT, "That cursor is not one this list gave out.", "after"))
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(parse):
            raise bad
        # Every cursor given out holds text PostgreSQL stores; JSON also holds numbers, lists, NUL, "\ud800".
        if not all(isinstance(value, str) and storable(value) for value in values):
            raise bad
        return [read(value) for read, value in zip(parse, values, strict=True)]
    except (TypeError, ValueError, RecursionError):
        raise bad from None
