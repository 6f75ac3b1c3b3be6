"""IDs are UUID strings, unique across every type (so a client's cache may key objects by id alone); a
malformed one is a business error naming the field, never a 500."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import strawberry

from db.errors import DomainError, ErrorCode, Problem
from db.text import shown


@strawberry.interface(
    description="An object with an id no other object has; `node(id)` finds it again (Relay's object "
    "identification)."
)
class Node:
    id: strawberry.ID


def parse_id(value: str, *, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise DomainError(
            Problem(ErrorCode.NOT_FOUND, f"'{shown(value)}' is not an id that exists here.", field)
        ) from None


def parse_ids(values: Iterable[str], *, field: str) -> list[uuid.UUID]:
    return [parse_id(value, field=field) for value in values]


# No row has it: every id is a random (version 4) UUID.
NO_ID = uuid.UUID(int=0)


def lookup_id(value: str) -> uuid.UUID:
    """An id a read looks something up by: a malformed one finds nothing, as an unknown one does (a read
    answers both with null or an empty list; a mutation with NOT_FOUND, through parse_id)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return NO_ID
