"""Users of a school: pupils and teachers (some teachers are admins)."""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import AliasedClass

from db.errors import DomainError, ErrorCode, Problem, require_batch_size, unique_or
from db.models import ClassMembership, User, UserType
from db.names import PERSON_NAME_MAX, name_problem, tidy_name
from db.pagination import decode_cursor, encode_cursor, page_size
from db.text import offset_time

USERNAME_MAX = 64
USERNAME = re.compile(rf"^[A-Za-z0-9._-]{{1,{USERNAME_MAX}}}$")
EMAIL_MAX = 254  # RFC 5321's longest forward path, less its angle brackets
# One "@", something either side, a dot in the domain, no spaces; whether mail arrives is the mail's business.
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")
EMAIL_INDEX = "uq_users_school_id_email_active"
USERNAME_INDEX = "uq_users_school_id_username_active"
PUPILS_HAVE_NO_EMAIL = "Pupils have no email address in Rollcall: a child's data stays minimal."
ONLY_TEACHERS_ARE_ADMINS = "Only teachers can be admins."
ADMIN_NEEDED = "The school must keep at least one admin."
LAST_ADMIN = Problem(ErrorCode.LAST_ADMIN, ADMIN_NEEDED)
# What a roster file may not hold either (PostgreSQL's text cannot even store NUL); whitespace is normalised first.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_username(raw: str, *, field: str = "username") -> str:
    username = raw.strip()
    if not USERNAME.fullmatch(username):
        raise DomainError(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"A username is 1 to {USERNAME_MAX} characters: letters, digits, dots, dashes and underscores.",
                field,
            )
        )
    return username


def clean_name(raw: str, *, field: str, what: str = "The name", most: int = PERSON_NAME_MAX) -> str:
    """A person's or a class's name, tidied, or INVALID_INPUT saying what is wrong with it (db.names)."""
    name = tidy_name(raw)
    if problem := name_problem(name, what=what, most=most):
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, problem, field))
    return name


def clean_email(raw: str | None, *, field: str = "email") -> str | None:
    """A staff member's email address as typed (trimmed), or None for a blank one."""
    email = (raw or "").strip()
    if not email:
        return None
    if len(email) > EMAIL_MAX or not EMAIL.fullmatch(email) or CONTROL_CHARACTERS.search(email):
        raise DomainError(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"'{email[:60]}' is not an email address such as name@school.example (at most {EMAIL_MAX} "
                "characters).",
                field,
            )
        )
    return email


async def email_taken(
    session: AsyncSession, school_id: uuid.UUID, email: str, *, except_user: uuid.UUID | None = None
) -> bool:
    query = select(User.id).where(
        User.school_id == school_id, func.lower(User.email) == email.lower(), User.deleted_at.is_(None)
    )
    if except_user is not None:
        query = query.where(User.id != except_user)
    return (await session.execute(query.limit(1))).first() is not None


def email_taken_problem(email: str, user_id: uuid.UUID | None = None) -> Problem:
    return Problem(
        ErrorCode.EMAIL_TAKEN, f"The email address '{email}' belongs to another user.", "email", user_id
    )


async def username_taken(
    session: AsyncSession, school_id: uuid.UUID, username: str, *, except_user: uuid.UUID | None = None
) -> bool:
    query = select(User.id).where(
        User.school_id == school_id, func.lower(User.username) == username.lower(), User.deleted_at.is_(None)
    )
    if except_user is not None:
        query = query.where(User.id != except_user)
    return (await session.execute(query.limit(1))).first() is not None


async def require_an_admin_left(
    session: AsyncSession, school_id: uuid.UUID, *, without: set[uuid.UUID]
) -> None:
    """LAST_ADMIN unless an active admin other than the users `without` would remain (hold lock_roster)."""
    left = (
        await session.execute(
            select(User.id)
            .where(
                User.school_id == school_id, User.is_admin, User.deleted_at.is_(None), User.id.not_in(without)
            )
            .limit(1)
        )
    ).first()
    if left is None:
        raise DomainError(LAST_ADMIN)


def edited() -> dict[str, Any]:
    """What every change to a user also sets in an UPDATE: the next version (the edit form's guard) and when."""
    return {"version": User.version + 1, "updated_at": func.now()}


def mark_edited(user: User) -> None:
    """The same for a loaded user whose columns are being set."""
    user.version += 1
    user.updated_at = func.now()


def _taken(username: str, user_id: uuid.UUID | None = None) -> DomainError:
    return DomainError(
        Problem(ErrorCode.USERNAME_TAKEN, f"The username '{username}' is already taken.", "username", user_id)
    )


async def save_username(session: AsyncSession, user: User, write: Callable[[], None]) -> None:
    """Run a write that sets a username or email; a unique-index collision (two admins at once) becomes
    USERNAME_TAKEN or EMAIL_TAKEN.

    `write` makes every change to `user` itself (see db.errors.unique_or)."""
    username: str
    user_id: uuid.UUID | None
    email: str | None
    collisions = {
        EMAIL_INDEX: lambda: DomainError(email_taken_problem(email or "", user_id)),
        USERNAME_INDEX: lambda: _taken(username, user_id),
    }
    async with unique_or(session, collisions):
        write()
        # Read now: the savepoint's rollback expires the user, and reloading it would need another query.
        username, user_id, email = user.username, user.id, user.email


async def locked_users(
    session: AsyncSession, school_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> tuple[list[uuid.UUID], dict[uuid.UUID, User]]:
    """The distinct ids named, in id order, and those of the school's users found among them, each row locked
    (in id order, so two batches over the same users queue rather than deadlock); at most BATCH_LIMIT ids."""
    ids = sorted(set(user_ids))
    require_batch_size(len(ids))
    found = (
        await session.execute(
            select(User)
            .where(User.school_id == school_id, User.id.in_(ids))
            .order_by(User.id)
            .with_for_update()
        )
    ).scalars()
    return ids, {user.id: user for user in found}


def no_such_user(user_id: uuid.UUID) -> Problem:
    return Problem(ErrorCode.NOT_FOUND, f"No user has the id {user_id}.", "userIds", user_id)


async def create_user(
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
    external_id: str | None = None,
    email: str | None = None,
) -> User:
    """Add one user whose every field is already validated: the one way a user row is made (a roster import
    inserts its new users in bulk, from the same validated fields). A username or email already in use (the
    unique indexes decide) is reported as USERNAME_TAKEN or EMAIL_TAKEN, not raised as a database error."""
    user = User(
        school_id=school_id,
        id=uuid.uuid4(),
        username=username,
        type=type,
        first_name=first_name,
        surname=surname,
        is_admin=is_admin,
        must_change_password=must_change_password,
        external_id=external_id,
        email=email,
        password_hash=password_hash,
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
    # Users whose own row changed at or after this time (a change's time is its transaction's).
    updated_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserOrder:
    field: UserOrderField = UserOrderField.SURNAME
    descending: bool = False


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    cursors: list[str]
    has_next_page: bool


# The users table's one filter, orderings and keyset condition. list_users and count_users build their
# queries from them, and gql.compiled_sql renders the same expressions into the compiled read path's statement.
# `users` is the User entity or an alias of it; a value is a plain value or an SQL expression (the compiled
# path passes placeholders, and a class's own id for its roster).


def sort_key(users: type[User] | AliasedClass[User], field: UserOrderField) -> ColumnElement[Any]:
    match field:
        case UserOrderField.USERNAME:
            return func.lower(users.username)
        case UserOrderField.FIRST_NAME:
            return func.lower(users.first_name)
        case UserOrderField.SURNAME:
            return func.lower(users.surname)
        case UserOrderField.TYPE:
            return users.type.expression
        case UserOrderField.CREATED_AT:
            return users.created_at.expression


def in_order(
    key: ColumnElement[Any], row_id: ColumnElement[Any], *, descending: bool
) -> list[ColumnElement[Any]]:
    """A page's order: by its sort key, ties broken by id, both the same way."""
    return [key.desc(), row_id.desc()] if descending else [key, row_id]


def after_position(
    key: ColumnElement[Any], row_id: ColumnElement[Any], value: Any, last_id: Any, *, descending: bool
) -> ColumnElement[bool]:
    """The keyset condition: the rows after (sort value, id) in the page's order."""
    position, bound = tuple_(key, row_id), tuple_(value, last_id)
    return position < bound if descending else position > bound


def filter_values(where: UserFilter) -> dict[str, Any]:
    """What user_conditions compares with for a filter, by name: only the parts given."""
    values = {
        "type": where.type,
        "search": search_pattern(where.search),
        "class_id": where.class_id,
        "updated_since": where.updated_since,
    }
    return {name: value for name, value in values.items() if value is not None}


def user_conditions(
    users: type[User] | AliasedClass[User],
    *,
    school_id: Any,
    status: UserStatus,
    type: Any = None,
    search: Any = None,
    class_id: Any = None,
    updated_since: Any = None,
) -> list[ColumnElement[bool]]:
    """Which users a filter keeps: `search` is search_pattern's ILIKE pattern; a part left None keeps all."""
    conditions = [users.school_id == school_id]
    if status == UserStatus.ACTIVE:
        conditions.append(users.deleted_at.is_(None))
    elif status == UserStatus.DELETED:
        conditions.append(users.deleted_at.is_not(None))
    if type is not None:
        conditions.append(users.type == type)
    if search is not None:
        conditions.append(
            or_(users.username.ilike(search), users.first_name.ilike(search), users.surname.ilike(search))
        )
    if updated_since is not None:
        conditions.append(users.updated_at >= updated_since)
    if class_id is not None:
        conditions.append(
            exists().where(
                ClassMembership.school_id == school_id,
                ClassMembership.class_id == class_id,
                ClassMembership.user_id == users.id,
            )
        )
    return conditions


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
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, "A search cannot contain a NUL character.", "search")
        )
    return "%" + re.sub(r"([\\%_])", r"\\\1", search.strip()) + "%"


def _filtered(school_id: uuid.UUID, where: UserFilter) -> Select[User]:
    return select(User).where(
        *user_conditions(User, school_id=school_id, status=where.status, **filter_values(where))
    )


async def list_users(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    where: UserFilter,
    order: UserOrder,
    first: int | None,
    after: str | None,
) -> UserPage:
    """One page of the users table, in a stable order (ties broken by id)."""
    size = page_size(first)
    key = sort_key(User, order.field)
    query = _filtered(school_id, where)
    if after is not None:
        read_value = offset_time if order.field == UserOrderField.CREATED_AT else str
        value, last_id = decode_cursor(after, parse=(read_value, uuid.UUID))
        query = query.where(
            after_position(
                key,
                User.id.expression,
                literal(value, key.type),
                literal(last_id),
                descending=order.descending,
            )
        )
    query = query.order_by(*in_order(key, User.id.expression, descending=order.descending))
    rows = (await session.execute(query.add_columns(key).limit(size + 1))).all()
    page = rows[:size]
    return UserPage(
        users=[user for user, _ in page],
        cursors=[encode_cursor([_cursor_value(value), str(user.id)]) for user, value in page],
        has_next_page=len(rows) > size,
    )


async def count_users(session: AsyncSession, *, school_id: uuid.UUID, where: UserFilter) -> int:
    return (
        await session.execute(select(func.count()).select_from(_filtered(school_id, where).subquery()))
    ).scalar_one()


async def get_user(session: AsyncSession, *, school_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
    return (
        await session.execute(select(User).where(User.school_id == school_id, User.id == user_id))
    ).scalar_one_or_none()


async def users_by_id(
    session: AsyncSession, *, school_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, User]:
    """The users of these ids, deleted or not; ids of no user of the school are left out."""
    rows = await session.execute(select(User).where(User.school_id == school_id, User.id.in_(user_ids)))
    return {user.id: user for user in rows.scalars()}


async def sharing_a_class(
    session: AsyncSession, *, school_id: uuid.UUID, viewer_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these users are in a class the viewer is in too (registration or teaching)."""
    mine, theirs = aliased(ClassMembership), aliased(ClassMembership)
    rows = await session.execute(
        select(theirs.user_id)
        .join(mine, (mine.school_id == theirs.school_id) & (mine.class_id == theirs.class_id))
        .where(theirs.school_id == school_id, mine.user_id == viewer_id, theirs.user_id.in_(user_ids))
        .distinct()
    )
    return set(rows.scalars())
