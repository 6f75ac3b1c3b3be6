"""Business errors: what went wrong, in words an administrator can act on."""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

# The most ids one request may name (users to delete, pupils whose cards to print, classes to join...).
BATCH_LIMIT = 1000


class ErrorCode(enum.StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    SLUG_TAKEN = "SLUG_TAKEN"
    USERNAME_TAKEN = "USERNAME_TAKEN"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    EXTERNAL_ID_TAKEN = "EXTERNAL_ID_TAKEN"
    PASSWORD_TOO_WEAK = "PASSWORD_TOO_WEAK"
    PASSWORDS_DO_NOT_MATCH = "PASSWORDS_DO_NOT_MATCH"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    RATE_LIMITED = "RATE_LIMITED"
    REAUTH_FAILED = "REAUTH_FAILED"
    MANAGED_BY_PROVIDER = "MANAGED_BY_PROVIDER"
    MANAGED_IN_ROLLCALL = "MANAGED_IN_ROLLCALL"
    VERSION_CONFLICT = "VERSION_CONFLICT"
    CANNOT_DELETE_SELF = "CANNOT_DELETE_SELF"
    LAST_ADMIN = "LAST_ADMIN"
    USER_DELETED = "USER_DELETED"
    CLASS_NAME_TAKEN = "CLASS_NAME_TAKEN"
    TOO_MANY = "TOO_MANY"
    INVALID_FILE = "INVALID_FILE"
    IMPORT_NOT_CONFIRMABLE = "IMPORT_NOT_CONFIRMABLE"
    IMPORT_FAILED = "IMPORT_FAILED"
    NOT_YOUR_IMPORT = "NOT_YOUR_IMPORT"
    GENERATED_PASSWORDS_TAKEN = "GENERATED_PASSWORDS_TAKEN"
    GENERATED_PASSWORDS_EXPIRED = "GENERATED_PASSWORDS_EXPIRED"
    NO_GENERATED_PASSWORDS = "NO_GENERATED_PASSWORDS"
    CONCURRENT_CHANGE = "CONCURRENT_CHANGE"
    RESYNC_REQUIRED = "RESYNC_REQUIRED"
    LEAVERS_NOT_CONFIRMED = "LEAVERS_NOT_CONFIRMED"
    ROLLOVER_NOT_CONFIRMABLE = "ROLLOVER_NOT_CONFIRMABLE"
    ROLLOVER_FAILED = "ROLLOVER_FAILED"
    ROLLOVER_NOT_REVERTIBLE = "ROLLOVER_NOT_REVERTIBLE"
    REVERT_CONFLICT = "REVERT_CONFLICT"


@dataclass(frozen=True, slots=True)
class Problem:
    code: ErrorCode
    message: str
    field: str | None = None
    user_id: uuid.UUID | None = None
    # Re-authentication: how many more wrong passwords the session may take before it is signed out.
    attempts_remaining: int | None = None


class DomainError(Exception):
    """Raised inside a transaction to roll all of it back and report every problem found."""

    def __init__(self, *problems: Problem) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = list(problems)


class Problems:
    """Collects every problem with an input before failing, so a form can show them all at once."""

    def __init__(self) -> None:
        self.found: list[Problem] = []

    def check(self, validate: Callable[[], T]) -> T | None:
        try:
            return validate()
        except DomainError as error:
            self.found.extend(error.problems)
            return None

    def add(self, *problems: Problem) -> None:
        self.found.extend(problems)

    def raise_any(self) -> None:
        if self.found:
            raise DomainError(*self.found)


def require_batch_size(count: int, *, field: str = "userIds", things: str = "users") -> None:
    """TOO_MANY, against `field`, when a request names more than BATCH_LIMIT `things`."""
    if count > BATCH_LIMIT:
        raise DomainError(
            Problem(ErrorCode.TOO_MANY, f"Choose at most {BATCH_LIMIT} {things} at a time.", field)
        )


@contextmanager
def on_collision(collisions: Mapping[str, Callable[[], Exception]]) -> Iterator[None]:
    """A collision on a unique index named in `collisions`, in the block, raises that index's error instead;
    any other integrity error goes on as it is. With no savepoint around the block, the collision has ended
    the transaction, and the error rolls it back whole."""
    try:
        yield
    except IntegrityError as error:
        for index, collided in collisions.items():
            if index in str(error.orig):
                raise collided() from None
        raise


@asynccontextmanager
async def unique_or(
    session: AsyncSession, collisions: Mapping[str, Callable[[], Exception]]
) -> AsyncIterator[None]:
    """Run the block in a savepoint and flush it there; a collision on a unique index named in `collisions`
    (two people choosing the same name at once: the index decides) raises that index's error instead, and any
    other integrity error goes on as it is.

    Whatever is already pending is flushed as the savepoint begins, outside it, where a collision would end
    the whole transaction: the block makes the changes the indexes guard. The errors are built after the
    savepoint's rollback has expired what it loaded, so they should quote values read inside the block."""
    with on_collision(collisions):
        async with session.begin_nested():
            yield
            await session.flush()
