"""Business errors: what went wrong, in words an administrator can act on."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class ErrorCode(enum.StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    SLUG_TAKEN = "SLUG_TAKEN"
    USERNAME_TAKEN = "USERNAME_TAKEN"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    PASSWORD_TOO_WEAK = "PASSWORD_TOO_WEAK"
    PASSWORDS_DO_NOT_MATCH = "PASSWORDS_DO_NOT_MATCH"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    RATE_LIMITED = "RATE_LIMITED"
    REAUTH_FAILED = "REAUTH_FAILED"
    MANAGED_BY_PROVIDER = "MANAGED_BY_PROVIDER"
    VERSION_CONFLICT = "VERSION_CONFLICT"
    CANNOT_DELETE_SELF = "CANNOT_DELETE_SELF"
    LAST_ADMIN = "LAST_ADMIN"
    USER_DELETED = "USER_DELETED"
    CLASS_NAME_TAKEN = "CLASS_NAME_TAKEN"
    TOO_MANY = "TOO_MANY"
    INVALID_FILE = "INVALID_FILE"
    IMPORT_NOT_CONFIRMABLE = "IMPORT_NOT_CONFIRMABLE"
    IMPORT_FAILED = "IMPORT_FAILED"
    CONCURRENT_CHANGE = "CONCURRENT_CHANGE"


@dataclass(frozen=True, slots=True)
class Problem:
    code: ErrorCode
    message: str
    field: str | None = None
    user_id: uuid.UUID | None = None


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
