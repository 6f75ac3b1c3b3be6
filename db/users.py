"""Users of a school: pupils and teachers (some teachers are admins)."""

from __future__ import annotations

import enum
from collections.abc import Callable
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, literal, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import DomainError, ErrorCode, Problem
from db.models import ClassMembership, User, UserType
from db.pagination import decode_cursor, encode_cursor, page_size

USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
EMAIL_MAX = 254  # RFC 5321's longest forward path, less its angle brackets
# One "@", something either side, a dot in the domain, no spaces; whether mail arrives is the mail's business.
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")
EMAIL_INDEX = "uq_users_school_id_email_active"
PUPILS_HAVE_NO_EMAIL = "Pupils have no email address in Rollcall: a child's data stays minimal."
NAME_MAX = 100
# What a roster file may not hold either (PostgreSQL's text cannot even store NUL); whitespace is normalised first.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_username(raw: str, *, field: str = "username") -> str:
    username = raw.strip()
    if not USERNAME.fullmatch(username):
        raise DomainError(Problem(
            ErrorCode.INVALID_INPUT,
            "A username is 1 to 64 characters: letters, digits, dots, dashes and underscores.",
            field,
        ))
    return username


def clean_name(raw: str, *, field: str) -> str:
    name = " ".join(raw.split())
    if len(name) > NAME_MAX:
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, f"A name is at most {NAME_MAX} characters.", field))
    if CONTROL_CHARACTERS.search(name):
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, "A name cannot contain control characters.", field))
    return name


def clean_email(raw: str | None, *, field: str = "email") -> str | None:
    """A staff member's email address as typed (trimmed), or None for a blank one."""
    email = (raw or "").strip()
    if not email:
        return None
    if len(email) > EMAIL_MAX or not EMAIL.fullmatch(email) or CONTROL_CHARACTERS.search(email):
        raise DomainError(Problem(
            ErrorCode.INVALID_INPUT,
            f"'{email[:60]}' is not an email address such as name@school.example (at most {EMAIL_MAX} "
            "characters).", field))
    return email


async def email_taken(session: AsyncSession, school_id: uuid.UUID, email: str,
                      *, except_user: uuid.UUID | None = None) -> bool:
    query = select(User.id).where(
        User.school_id == school_id, func.lower(User.email) == email.lower(), User.deleted_at.is_(None))
    if except_user is not None:
        query = query.where(User.id != except_user)
    return (await session.execute(query.limit(1))).first() is not None


def email_taken_problem(email: str, user_id: uuid.UUID | None = None) -> Problem:
    return Problem(ErrorCode.EMAIL_TAKEN, f"The email address '{email}' belongs to another user.", "email",
                   user_id)


async def username_taken(session: AsyncSession, school_id: uuid.UUID, username: str,
                         *, except_user: uuid.UUID | None = None) -> bool:
    query = select(User.id).where(
        User.school_id == school_id, func.lower(User.username) == username.lower(), User.deleted_at.is_(None)
    )
    if except_user is not None:
        query = query.where(User.id != except_user)
    return (await session.execute(query.limit(1))).first() is not None


def _taken(username: str, user_id: uuid.UUID | None = None) -> DomainError:
    return DomainError(Problem(ErrorCode.USERNAME_TAKEN, f"The username '{username}' is already taken.",
                               "username", user_id))


async def save_username(session: AsyncSession, user: User, write: Callable[[], None]) -> None:
    """Run a write that sets a username or email; a unique-index collision (two admins at once) becomes
    USERNAME_TAKEN or EMAIL_TAKEN."""
    try:
        async with session.begin_nested():
            write()
            await session.flush()
    except IntegrityError as error:
        if EMAIL_INDEX in str(error.orig) and user.email is not None:
            raise DomainError(email_taken_problem(user.email, user.id)) from None
        if "uq_users_school_id_username_active" not in str(error.orig):
            raise
        raise _taken(user.username, user.id) from None


async def insert_user(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    username: str,
    password_hash: str,
    type: UserType,
    first_name: str = "",
    surname: str = "",
    is_admin: bool = False,
    must_change_password: bool = False,
) -> User:
    """Insert one validated user; a username already in use is reported, not raised as a database error."""
    if await username_taken(session, school_id, username):
        raise _taken(username)
    user = User(
        school_id=school_id, username=username, password_hash=password_hash, type=type,
        first_name=first_name, surname=surname, is_admin=is_admin, must_change_password=must_change_password,
    )
    await save_username(session, user, lambda: session.add(user))
    return user


class UserStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    DELETED = "DELETED"
    ALL = "ALL"


class UserOrderField(enum.StrEnum):
    USERNAME = "USERNAME"
    FIRST_NAME = "FIRST_NAME"
    SURNAME = "SURNAME"
    TYPE = "TYPE"
    CREATED_AT = "CREATED_AT"


@dataclass(frozen=True, slots=True)
class UserFilter:
    search: str | None = None
    type: UserType | None = None
    class_id: uuid.UUID | None = None
    status: UserStatus = UserStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class UserOrder:
    field: UserOrderField = UserOrderField.SURNAME
    descending: bool = False


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    cursors: list[str]
    has_next_page: bool


def _sort_key(field: UserOrderField) -> ColumnElement[Any]:
    match field:
        case UserOrderField.USERNAME:
            return func.lower(User.username)
        case UserOrderField.FIRST_NAME:
            return func.lower(User.first_name)
        case UserOrderField.SURNAME:
            return func.lower(User.surname)
        case UserOrderField.TYPE:
            return User.type
        case UserOrderField.CREATED_AT:
            return User.created_at


def _cursor_value(key: Any) -> str:
    """The sort key as PostgreSQL computed it (its lower() is not Python's), so the keyset compares like with
    like."""
    if isinstance(key, datetime):
        return key.isoformat()
    return key.value if isinstance(key, enum.Enum) else str(key)


def search_pattern(search: str | None) -> str | None:
    """The ILIKE pattern for a search: the text anywhere, with LIKE's own characters taken literally."""
    if not search or not search.strip():
        return None
    if "\x00" in search:
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, "A search cannot contain a NUL character.", "search"))
    return "%" + re.sub(r"([\\%_])", r"\\\1", search.strip()) + "%"


def _filtered(school_id: uuid.UUID, where: UserFilter) -> Select[tuple[User]]:
    query = select(User).where(User.school_id == school_id)
    if where.status == UserStatus.ACTIVE:
        query = query.where(User.deleted_at.is_(None))
    elif where.status == UserStatus.DELETED:
        query = query.where(User.deleted_at.is_not(None))
    if where.type is not None:
        query = query.where(User.type == where.type)
    if (pattern := search_pattern(where.search)) is not None:
        query = query.where(or_(User.username.ilike(pattern), User.first_name.ilike(pattern),
                                User.surname.ilike(pattern)))
    if where.class_id is not None:
        query = query.where(exists().where(
            ClassMembership.school_id == school_id, ClassMembership.class_id == where.class_id,
            ClassMembership.user_id == User.id))
    return query


async def list_users(session: AsyncSession, *, school_id: uuid.UUID, where: UserFilter, order: UserOrder,
                     first: int | None, after: str | None) -> UserPage:
    """One page of the users table, in a stable order (ties broken by id)."""
    size = page_size(first)
    key = _sort_key(order.field)
    query = _filtered(school_id, where)
    if after is not None:
        read_value = datetime.fromisoformat if order.field == UserOrderField.CREATED_AT else str
        value, last_id = decode_cursor(after, parse=(read_value, uuid.UUID))
        position, bound = tuple_(key, User.id), tuple_(literal(value, key.type), literal(last_id))
        query = query.where(position < bound if order.descending else position > bound)
    if order.descending:
        query = query.order_by(key.desc(), User.id.desc())
    else:
        query = query.order_by(key, User.id)
    rows = (await session.execute(query.add_columns(key).limit(size + 1))).all()
    page = rows[:size]
    return UserPage(
        users=[user for user, _ in page],
        cursors=[encode_cursor([_cursor_value(value), str(user.id)]) for user, value in page],
        has_next_page=len(rows) > size,
    )


async def count_users(session: AsyncSession, *, school_id: uuid.UUID, where: UserFilter) -> int:
    return (await session.execute(
        select(func.count()).select_from(_filtered(school_id, where).subquery())
    )).scalar_one()


async def get_user(session: AsyncSession, *, school_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
    return (await session.execute(
        select(User).where(User.school_id == school_id, User.id == user_id)
    )).scalar_one_or_none()
