"""Users of a school: pupils and teachers (some teachers are admins)."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import DomainError, ErrorCode, Problem
from db.models import User, UserType

USERNAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
NAME_MAX = 100


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
    return name


async def username_taken(session: AsyncSession, school_id: uuid.UUID, username: str,
                         *, except_user: uuid.UUID | None = None) -> bool:
    query = select(User.id).where(
        User.school_id == school_id, func.lower(User.username) == username.lower(), User.deleted_at.is_(None)
    )
    if except_user is not None:
        query = query.where(User.id != except_user)
    return (await session.execute(query.limit(1))).first() is not None


def _taken(username: str) -> DomainError:
    return DomainError(Problem(ErrorCode.USERNAME_TAKEN, f"The username '{username}' is already taken.",
                               "username"))


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
    try:
        async with session.begin_nested():
            session.add(user)
    except IntegrityError as error:
        # Two admins adding the same username at once: the unique index decides.
        if "uq_users_school_id_username_active" in str(error.orig):
            raise _taken(username) from None
        raise
    return user
