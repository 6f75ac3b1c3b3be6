"""Users of a school: pupils and teachers (some teachers are admins)."""

from __future__ import annotations

import enum
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Exists,
    Select,
    String,
    and_,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import AliasedClass

from db.errors import DomainError, ErrorCode, Problem, require_batch_size, unique_or
from db.models import ClassMembership, SchoolClass, User, UserType
from db.names import PERSON_NAME_MAX, name_problem, tidy_name
from db.pagination import cursor_values, encode_cursor, page_size, read_values
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
    REGISTRATION_CLASS = "REGISTRATION_CLASS"
    CREATED_AT = "CREATED_AT"
    UPDATED_AT = "UPDATED_AT"
    DELETED_AT = "DELETED_AT"
    LAST_SIGN_IN_AT = "LAST_SIGN_IN_AT"


@dataclass(frozen=True, slots=True)
class UserFilter:
    search: str | None = None
    type: UserType | None = None
    class_id: uuid.UUID | None = None
    status: UserStatus = UserStatus.ACTIVE
    # Users whose own row changed at or after this time (a change's time is its transaction's).
    updated_since: datetime | None = None
    # Users who are not members of this class (the picker of pupils to add to it).
    not_in_class_id: uuid.UUID | None = None
    # True: users with a registration class; False: users without one.
    has_registration_class: bool | None = None


@dataclass(frozen=True, slots=True)
class UserOrder:
    field: UserOrderField = UserOrderField.SURNAME
    descending: bool = False


@dataclass(frozen=True, slots=True)
class UserPage:
    users: list[User]
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool = False


# The users table's one filter, orderings and keyset condition. list_users and count_users build their
# queries from them, and gql.compiled_sql renders the same expressions into the compiled read path's statement.
# `users` is the User entity or an alias of it; a value is a plain value or an SQL expression (the compiled
# path passes placeholders, and a class's own id for its roster). None of them holds a bound value of its
# own, so the compiled path can render them once as templates.

Users = type[User] | AliasedClass[User]


class KeyKind(enum.Enum):
    """How a sort key's value is written in a cursor and read back from one."""

    TEXT = "text"
    TIME = "time"  # ISO 8601 with its offset
    TYPE = "type"  # a UserType's value


@dataclass(frozen=True, slots=True)
class SortKey:
    expression: Callable[[Users], ColumnElement[Any]]
    kind: KeyKind = KeyKind.TEXT


def _registration_class_name(users: Users) -> ColumnElement[Any]:
    """The name of the user's registration class whatever its case; '' (first) for a user without one."""
    name = (
        select(func.min(func.lower(SchoolClass.name)))
        .select_from(ClassMembership)
        .join(
            SchoolClass,
            and_(
                SchoolClass.school_id == ClassMembership.school_id, SchoolClass.id == ClassMembership.class_id
            ),
        )
        .where(
            ClassMembership.school_id == users.school_id,
            ClassMembership.user_id == users.id,
            ClassMembership.kind == literal_column("'REGISTRATION'"),
        )
        .scalar_subquery()
    )
    return func.coalesce(name, literal_column("''"))


_SURNAME = SortKey(lambda users: func.lower(users.surname))
_FIRST_NAME = SortKey(lambda users: func.lower(users.first_name))
_NAME = (_SURNAME, _FIRST_NAME)  # what breaks most orderings' ties
# Not deleted sorts as the earliest time: first ascending, last descending.
_NEVER = literal_column("'epoch'::timestamptz", type_=DateTime(timezone=True))
# Each ordering's sort keys: the first leads and the others break its ties, then the user's id breaks any left.
# Adding an ordering is its value in UserOrderField and one line here; both read paths and the cursors follow.
ORDERINGS: dict[UserOrderField, tuple[SortKey, ...]] = {
    UserOrderField.USERNAME: (SortKey(lambda users: func.lower(users.username)),),
    UserOrderField.FIRST_NAME: (_FIRST_NAME, _SURNAME),
    UserOrderField.SURNAME: _NAME,
    UserOrderField.TYPE: (SortKey(lambda users: users.type.expression, KeyKind.TYPE), *_NAME),
    UserOrderField.REGISTRATION_CLASS: (SortKey(_registration_class_name), *_NAME),
    UserOrderField.CREATED_AT: (SortKey(lambda users: users.created_at.expression, KeyKind.TIME), *_NAME),
    UserOrderField.UPDATED_AT: (SortKey(lambda users: users.updated_at.expression, KeyKind.TIME), *_NAME),
    UserOrderField.DELETED_AT: (
        SortKey(lambda users: func.coalesce(users.deleted_at, _NEVER), KeyKind.TIME),
        *_NAME,
    ),
    UserOrderField.LAST_SIGN_IN_AT: (
        SortKey(lambda users: func.coalesce(users.last_sign_in_at, _NEVER), KeyKind.TIME),
        *_NAME,
    ),
}


def sort_keys(users: Users, field: UserOrderField) -> list[ColumnElement[Any]]:
    """An ordering's sort keys over `users`, leading key first (the id comes after them)."""
    return [key.expression(users) for key in ORDERINGS[field]]


def in_order(
    keys: Sequence[ColumnElement[Any]], row_id: ColumnElement[Any], *, descending: bool
) -> list[ColumnElement[Any]]:
    """A page's order: by its sort keys, ties broken by id, all the same way."""
    return [part.desc() for part in (*keys, row_id)] if descending else [*keys, row_id]


def past_position(
    keys: Sequence[ColumnElement[Any]],
    row_id: ColumnElement[Any],
    values: Sequence[Any],
    last_id: Any,
    *,
    descending: bool,
    after: bool = True,
) -> ColumnElement[bool]:
    """The keyset condition: the rows after (or, not `after`, before) the position (sort values, id) in the
    page's order."""
    position, bound = tuple_(*keys, row_id), tuple_(*values, last_id)
    return position < bound if descending == after else position > bound


def filter_values(where: UserFilter) -> dict[str, Any]:
    """What user_conditions compares with for a filter, by name: only the parts given."""
    values = {
        "type": where.type,
        "search": search_pattern(where.search),
        "class_id": where.class_id,
        "updated_since": where.updated_since,
        "not_in_class_id": where.not_in_class_id,
        "has_registration_class": where.has_registration_class,
    }
    return {name: value for name, value in values.items() if value is not None}


def _member_of(users: Users, school_id: Any, class_id: Any) -> Exists:
    return exists().where(
        ClassMembership.school_id == school_id,
        ClassMembership.class_id == class_id,
        ClassMembership.user_id == users.id,
    )


def user_conditions(
    users: Users,
    *,
    school_id: Any,
    status: UserStatus,
    type: Any = None,
    search: Any = None,
    class_id: Any = None,
    updated_since: Any = None,
    not_in_class_id: Any = None,
    has_registration_class: Any = None,
) -> list[ColumnElement[bool]]:
    """Which users a filter keeps: `search` is search_pattern's ILIKE pattern, matched against the username,
    each name and the full name either way round; a part left None keeps all."""
    conditions = [users.school_id == school_id]
    if status == UserStatus.ACTIVE:
        conditions.append(users.deleted_at.is_(None))
    elif status == UserStatus.DELETED:
        conditions.append(users.deleted_at.is_not(None))
    if type is not None:
        conditions.append(users.type == type)
    if search is not None:
        space: ColumnElement[str] = literal_column("' '", type_=String)
        conditions.append(
            or_(
                users.username.ilike(search),
                users.first_name.op("||")(space).op("||")(users.surname).ilike(search),
                users.surname.op("||")(space).op("||")(users.first_name).ilike(search),
            )
        )
    if updated_since is not None:
        conditions.append(users.updated_at >= updated_since)
    if class_id is not None:
        conditions.append(_member_of(users, school_id, class_id))
    if not_in_class_id is not None:
        conditions.append(~_member_of(users, school_id, not_in_class_id))
    if has_registration_class is not None:
        registered = exists().where(
            ClassMembership.school_id == school_id,
            ClassMembership.user_id == users.id,
            ClassMembership.kind == literal_column("'REGISTRATION'"),
        )
        conditions.append(registered == has_registration_class)
    return conditions


def _cursor_value(key: Any) -> str:
    """The sort key as PostgreSQL computed it (its lower() is not Python's), so the keyset compares like with
    like."""
    if isinstance(key, datetime):
        return key.isoformat()
    return key.value if isinstance(key, enum.Enum) else str(key)


def search_pattern(search: str | None) -> str | None:
    """The ILIKE pattern for a search: the text anywhere (runs of spaces as one), with LIKE's own characters
    taken literally."""
    if not search or not search.strip():
        return None
    if "\x00" in search:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, "A search cannot contain a NUL character.", "search")
        )
    return "%" + re.sub(r"([\\%_])", r"\\\1", " ".join(search.split())) + "%"


# --- cursors and pages --------------------------------------------------------------------------------------


def cursor_scope(order: UserOrder, where: UserFilter) -> str:
    """What a cursor is good for, as text: the ordering and the filter (a class's roster is its class id,
    last, so the compiled path can append each class's own). A cursor holds its hash (cursor_tag)."""
    since = where.updated_since.astimezone(UTC).isoformat() if where.updated_since is not None else None
    parts = [
        order.field.value,
        order.descending,
        where.status.value,
        where.type.value if where.type is not None else None,
        search_pattern(where.search),
        since,
        str(where.not_in_class_id) if where.not_in_class_id is not None else None,
        where.has_registration_class,
    ]
    return json.dumps(parts, separators=(",", ":")) + "|" + (str(where.class_id) if where.class_id else "")


def cursor_tag(scope: str) -> str:
    """The first value of every cursor: 16 hex digits of the SHA-256 of its cursor_scope."""
    return hashlib.sha256(scope.encode()).hexdigest()[:CURSOR_TAG_LENGTH]


CURSOR_TAG_LENGTH = 16
OTHER_LIST = (
    "That cursor was given out for another ordering or filter of this list: start again from the first page."
)


_READ: dict[KeyKind, Callable[[str], Any]] = {
    KeyKind.TEXT: str,
    KeyKind.TIME: offset_time,
    KeyKind.TYPE: UserType,
}


@dataclass(frozen=True, slots=True)
class Position:
    """A row's place in an ordering, read from a cursor: its sort values and its id."""

    values: tuple[Any, ...]
    id: uuid.UUID


def read_cursor(cursor: str, order: UserOrder, where: UserFilter, *, argument: str) -> Position:
    """The position a cursor holds, or INVALID_INPUT (on `argument`) for a cursor this list did not give out,
    or gave out for another ordering or filter."""
    given = cursor_values(cursor, argument=argument)
    if given and len(given[0]) == CURSOR_TAG_LENGTH and given[0] != cursor_tag(cursor_scope(order, where)):
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, OTHER_LIST, argument))
    keys = ORDERINGS[order.field]
    _, *values, last_id = read_values(
        given, parse=(_tag_of(order, where), *(_READ[key.kind] for key in keys), uuid.UUID), argument=argument
    )
    return Position(values=tuple(values), id=last_id)


def _tag_of(order: UserOrder, where: UserFilter) -> Callable[[str], str]:
    def tag(text: str) -> str:
        if text != cursor_tag(cursor_scope(order, where)):
            raise ValueError("not this list's cursor")
        return text

    return tag


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page: `size` rows after `after` and before `before`, the first ones or (`backward`) the last."""

    size: int
    backward: bool
    after: Position | None
    before: Position | None


def page_request(
    order: UserOrder,
    where: UserFilter,
    *,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> PageRequest:
    """A page of the users table, as both read paths read it, or INVALID_INPUT for its arguments."""
    if first is not None and last is not None:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, "Give first or last, not both: a page is read one way.", "last")
        )
    backward = last is not None
    size = page_size(last if backward else first, least=0, argument="last" if backward else "first")
    return PageRequest(
        size=size,
        backward=backward,
        after=read_cursor(after, order, where, argument="after") if after is not None else None,
        before=read_cursor(before, order, where, argument="before") if before is not None else None,
    )


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
    last: int | None = None,
    before: str | None = None,
) -> UserPage:
    """One page of the users table, in a stable order (ties broken by the ordering's other keys, then id):
    the first `first` after `after`, or the last `last` before `before`."""
    request = page_request(order, where, first=first, after=after, last=last, before=before)
    keys = sort_keys(User, order.field)
    query = _filtered(school_id, where)
    for position, is_after in ((request.after, True), (request.before, False)):
        if position is not None:
            values = [literal(value, key.type) for value, key in zip(position.values, keys, strict=True)]
            query = query.where(
                past_position(
                    keys,
                    User.id.expression,
                    values,
                    literal(position.id),
                    descending=order.descending,
                    after=is_after,
                )
            )
    # A page from the end is read from the end, then put back in the page's order.
    query = query.order_by(
        *in_order(keys, User.id.expression, descending=order.descending != request.backward)
    )
    rows = (await session.execute(query.add_columns(*keys).limit(request.size + 1))).all()
    page = list(rows[: request.size])
    if request.backward:
        page.reverse()
    more = len(rows) > request.size
    tag = cursor_tag(cursor_scope(order, where))
    return UserPage(
        users=[row[0] for row in page],
        cursors=[
            encode_cursor([tag, *(_cursor_value(value) for value in row[1:]), str(row[0].id)]) for row in page
        ],
        has_next_page=request.before is not None if request.backward else more,
        has_previous_page=more if request.backward else request.after is not None,
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
