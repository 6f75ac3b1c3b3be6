"""The roster read path as ONE SQL statement whose JSON PostgreSQL builds: pages of users, and classes.

A read is described by a small tree (no GraphQL here): each selection is a tuple of (response key, node)
pairs, in the order they are to appear. `statement` turns a tree into SQL text and its parameters. The
filter, orderings and keyset condition are db.users' own SQLAlchemy expressions and the class order is
db.classes', rendered once per shape of page (and cached); the cursors are those of db.users.list_users. So a
page read this way answers exactly as one read field by field.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import ClauseElement, bindparam, func, literal_column, select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.orm import aliased

from db.classes import class_order
from db.models import ClassKind, SchoolClass, User, UserType
from db.pagination import decode_cursor, page_size
from db.text import offset_time
from db.users import (
    UserFilter,
    UserOrder,
    UserOrderField,
    UserStatus,
    after_position,
    filter_values,
    in_order,
    sort_key,
    user_conditions,
)

# Marks the statement in logs and in pg_stat_statements.
MARK = "/* rollcall:compiled */"
# json_build_object takes at most 100 arguments: 50 keys with their values.
MAX_KEYS = 50
# Renders db.users' and db.classes' expressions as the ORM's queries run them, with `%(name)s` placeholders
# that the statement's own parameters ($n) fill in.
_DIALECT = PGDialect_asyncpg(paramstyle="pyformat")  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped


@dataclass(frozen=True, slots=True)
class Typename:
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    """A plain field of the user or class in hand: a key of USER_COLUMNS or CLASS_COLUMNS."""

    name: str


@dataclass(frozen=True, slots=True)
class TotalCount:
    pass


@dataclass(frozen=True, slots=True)
class Cursor:
    pass


@dataclass(frozen=True, slots=True)
class HasNextPage:
    pass


@dataclass(frozen=True, slots=True)
class EndCursor:
    pass


@dataclass(frozen=True, slots=True)
class MemberCount:
    pass


@dataclass(frozen=True, slots=True)
class Edges:
    selection: Selection


@dataclass(frozen=True, slots=True)
class Node:
    selection: Selection


@dataclass(frozen=True, slots=True)
class PageInfo:
    selection: Selection


@dataclass(frozen=True, slots=True)
class RegistrationClass:
    selection: Selection


@dataclass(frozen=True, slots=True)
class TeachingClasses:
    selection: Selection


@dataclass(frozen=True, slots=True)
class Me:
    """The signed-in user (null for an app): the row whose id is the parameter CALLER."""

    selection: Selection


@dataclass(frozen=True, slots=True)
class School:
    """The caller's school: the school of the statement ($1)."""

    selection: Selection


class _CallerId:
    """Stands for the caller's user id among a statement's parameters; each request puts its own in its place."""

    def __repr__(self) -> str:
        return "CALLER"


CALLER = _CallerId()


@dataclass(frozen=True, slots=True)
class UsersPage:
    """Which users, in which order, from where: as list_users reads them."""

    where: UserFilter
    order: UserOrder
    size: int
    after: tuple[Any, uuid.UUID] | None


@dataclass(frozen=True, slots=True)
class Users:
    """A connection of users; `of_class` narrows it to the members of the class in hand."""

    page: UsersPage
    selection: Selection
    of_class: bool = False


@dataclass(frozen=True, slots=True)
class Classes:
    kind: ClassKind | None
    selection: Selection


Selected: TypeAlias = (
    Typename
    | Column
    | TotalCount
    | Cursor
    | HasNextPage
    | EndCursor
    | MemberCount
    | Edges
    | Node
    | PageInfo
    | RegistrationClass
    | TeachingClasses
    | Users
    | Classes
    | Me
    | School
)
Selection: TypeAlias = tuple[tuple[str, Selected], ...]

USER_COLUMNS = {
    "id": "id",
    "username": "username",
    "firstName": "first_name",
    "surname": "surname",
    "type": "type",
    "isAdmin": "is_admin",
    "mustChangePassword": "must_change_password",
    "createdAt": "created_at",
    "updatedAt": "updated_at",
    "deletedAt": "deleted_at",
    "version": "version",
    "externalId": "external_id",
    "lastSignInAt": "last_sign_in_at",
}
CLASS_COLUMNS = {"id": "id", "name": "name", "kind": "kind"}
SCHOOL_COLUMNS = {
    "id": "id",
    "slug": "slug",
    "name": "name",
    "provider": "provider",
    "pupilMinPasswordLength": "pupil_min_password_length",
    "qrSignInEnabled": "qr_sign_in_enabled",
    "schoolYearEndMonth": "school_year_end_month",
    "schoolYearEndDay": "school_year_end_day",
    "deletedUserRetentionDays": "deleted_user_retention_days",
    "teachersCanResetPupilPasswords": "teachers_can_reset_pupil_passwords",
}
_TIMES = {"created_at", "updated_at", "deleted_at", "last_sign_in_at"}


def users_page(where: UserFilter, order: UserOrder, first: int | None, after: str | None) -> UsersPage:
    """The page list_users would read, or the DomainError it would raise for `first` or `after`."""
    size = page_size(first)
    if after is None:
        return UsersPage(where=where, order=order, size=size, after=None)
    match order.field:
        case UserOrderField.CREATED_AT:
            value, last_id = decode_cursor(after, parse=(offset_time, uuid.UUID))
        case UserOrderField.TYPE:
            value, last_id = decode_cursor(after, parse=(UserType, uuid.UUID))
            value = value.value
        case _:
            value, last_id = decode_cursor(after, parse=(str, uuid.UUID))
    return UsersPage(where=where, order=order, size=size, after=(value, last_id))


@dataclass
class _Rows:
    """How a page's rows are held: `numbered` (1, 2, ... in the page's order, with the count of rows read)
    when pageInfo needs to know whether there is more; and what is gathered for all of them at once (the
    class alias and aggregate of one teachingClasses)."""

    numbered: bool
    way: str  # " desc" for a descending page
    teaching: tuple[str, str] | None = None
    # Whether one teachingClasses is gathered for all the rows at once (a page), or read user by user.
    gathers: bool = True

    def order(self, p: str = "") -> str:
        """The page's order: over its rows' sort key `k`, then `id` (of the rows named `p`, if given)."""
        return _rows_order(f"{p}." if p else "", self.way == " desc")


class TooBig(ValueError):
    """More keys in one object than json_build_object takes."""


@dataclass
class _Builder:
    params: list[Any]
    aliases: int = 0

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    def object(self, selection: Selection, value: Callable[[Selected], str]) -> str:
        if len(selection) > MAX_KEYS:
            raise TooBig(f"{len(selection)} keys")
        pairs = ", ".join(f"{_literal(key)}, {value(node)}" for key, node in selection)
        return f"json_build_object({pairs})"

    # --- the root ---------------------------------------------------------------------------------------

    def root(self, node: Selected) -> str:
        match node:
            case Typename(name):
                return _literal(name)
            case Users(page, selection):
                return self.users(page, selection, class_ref=None)
            case Classes(kind, selection):
                c = self.alias("c")
                kind_condition = f" and {c}.kind = {self.param(kind.value)}" if kind is not None else ""
                return (
                    f"coalesce((select json_agg({self.school_class(c, selection)} "
                    f"order by {_class_order(c)}) from classes {c} "
                    f"where {c}.school_id = $1{kind_condition}), '[]'::json)"
                )
            case Me(selection):
                p = self.alias("p")
                held = _Rows(numbered=False, way="", gathers=False)
                user = self.object(selection, lambda part: self.user_part(part, p, held))
                return (
                    f"(select {user} from users {p} "
                    f"where {p}.school_id = $1 and {p}.id = {self.param(CALLER)})"
                )
            case School(selection):
                s = self.alias("s")
                school = self.object(selection, lambda part: self.school_part(part, s))
                return f"(select {school} from schools {s} where {s}.id = $1)"
        raise TypeError(node)

    def school_part(self, node: Selected, s: str) -> str:
        match node:
            case Typename(name):
                return _literal(name)
            case Column(name):
                return f"{s}.{SCHOOL_COLUMNS[name]}"
        raise TypeError(node)

    # --- a connection of users ----------------------------------------------------------------------------

    def users(self, page: UsersPage, selection: Selection, *, class_ref: str | None) -> str:
        """One page of users, and (when asked for) each user's teaching classes, collected by grouping the
        page's rows with their memberships. Every join starts from the page's own rows, so no plan the
        statistics lead to is worse than linear in the page. One row more than the page is read only when
        pageInfo asks whether there is a next page."""
        u, r, p = self.alias("u"), self.alias("r"), self.alias("p")
        given = filter_values(page.where)
        if class_ref is not None:
            given.pop("class_id", None)
        shown = _columns_shown(selection)
        rows_sql, count_sql = _users_sql(
            u, class_ref, page.where.status, tuple(given), page.order, page.after is not None, shown
        )
        slots = {"school": "$1", **{name: self.param(value) for name, value in given.items()}}
        total = f"({count_sql % slots})"
        way = " desc" if page.order.descending else ""
        held = _Rows(numbered=any(isinstance(node, PageInfo) for _, node in selection), way=way)
        body = self.object(selection, lambda node: self.connection_part(node, p, page, total, held))
        if not any(isinstance(node, Edges | PageInfo) for _, node in selection):
            return body
        if page.after is not None:
            value, last_id = page.after
            slots |= {"after_value": self.param(value), "after_id": self.param(last_id)}
        rows = f"{r} {p}"
        if held.numbered:
            rows = (
                f"(select {r}.*, row_number() over (order by {held.order()}) as n, count(*) over () as rows "
                f"from {r}) {p}"
            )
        if held.teaching is not None:
            c, classes = held.teaching
            m = self.alias("m")
            grouped = ", ".join(
                f"{p}.{column}" for column in (*(("n", "rows") if held.numbered else ()), "k", *shown)
            )
            # Each membership's class is looked up on its own (offset 0 keeps the planner from turning the
            # lookup into a join, whose size it underestimates: it does not know memberships and classes
            # come from one school).
            rows = (
                f"(select {grouped}, coalesce({classes}, '[]'::json) as teaching from {rows} "
                f"left join class_memberships {m} on {m}.school_id = $1 and {m}.user_id = {p}.id "
                f"and {m}.kind = 'TEACHING' left join lateral (select * from classes {c} "
                f"where {c}.school_id = $1 and {c}.id = {m}.class_id and {c}.kind = 'TEACHING' offset 0) {c} "
                f"on true group by {grouped}) {p}"
            )
        limit = page.size + 1 if held.numbered else page.size
        return f"(with {r} as ({rows_sql % slots} limit {limit}) select {body} from {rows})"

    def connection_part(self, node: Selected, p: str, page: UsersPage, total: str, held: _Rows) -> str:
        size = page.size
        match node:
            case Typename(name):
                return _literal(name)
            case TotalCount():
                return total
            case Edges(selection):
                edge = self.object(selection, lambda part: self.edge_part(part, p, page, held))
                if held.numbered:
                    return f"coalesce(json_agg({edge} order by {p}.n) filter (where {p}.n <= {size}), '[]'::json)"
                return f"coalesce(json_agg({edge} order by {held.order(p)}), '[]'::json)"
            case PageInfo(selection):
                return self.object(selection, lambda part: self.page_info_part(part, p, page))
        raise TypeError(node)

    def edge_part(self, node: Selected, p: str, page: UsersPage, held: _Rows) -> str:
        match node:
            case Typename(name):
                return _literal(name)
            case Cursor():
                return cursor(p, page.order.field)
            case Node(selection):
                return self.object(selection, lambda part: self.user_part(part, p, held))
        raise TypeError(node)

    def page_info_part(self, node: Selected, p: str, page: UsersPage) -> str:
        match node:
            case Typename(name):
                return _literal(name)
            case HasNextPage():
                return f"count({p}.n) > {page.size}"
            case EndCursor():
                # Only the last row of the page is encoded.
                return (
                    f"(array_agg({cursor(p, page.order.field)}) "
                    f"filter (where {p}.n = least({p}.rows, {page.size})))[1]"
                )
        raise TypeError(node)

    # --- users and classes ----------------------------------------------------------------------------------

    def user_part(self, node: Selected, p: str, held: _Rows) -> str:
        match node:
            case Typename(name):
                return _literal(name)
            case Column(name):
                return _value(f"{p}.{USER_COLUMNS[name]}", USER_COLUMNS[name])
            case RegistrationClass(selection):
                # One row at most: a user is in at most one registration class (a unique index says so).
                m, c = self.alias("m"), self.alias("c")
                return (
                    f"(select {self.school_class(c, selection)} from class_memberships {m} "
                    f"join classes {c} on {c}.school_id = {m}.school_id and {c}.id = {m}.class_id "
                    f"where {m}.school_id = $1 and {m}.user_id = {p}.id and {m}.kind = 'REGISTRATION' "
                    f"and {c}.kind = 'REGISTRATION' order by {c}.name, {c}.id limit 1)"
                )
            case TeachingClasses(selection):
                m, c = self.alias("m"), self.alias("c")
                classes = f"json_agg({self.school_class(c, selection)} order by {c}.name, {c}.id)"
                if held.gathers and held.teaching is None:
                    held.teaching = (c, f"{classes} filter (where {c}.id is not null)")
                    return f"{p}.teaching"
                # Asked for twice (with aliases): the second one user by user.
                return (
                    f"coalesce((select {classes} from class_memberships {m} "
                    f"join classes {c} on {c}.school_id = {m}.school_id and {c}.id = {m}.class_id "
                    f"where {m}.school_id = $1 and {m}.user_id = {p}.id and {m}.kind = 'TEACHING' "
                    f"and {c}.kind = 'TEACHING'), '[]'::json)"
                )
        raise TypeError(node)

    def school_class(self, c: str, selection: Selection) -> str:
        return self.object(selection, lambda node: self.class_part(node, c))

    def class_part(self, node: Selected, c: str) -> str:
        match node:
            case Typename(name):
                return _literal(name)
            case Column(name):
                return f"{c}.{CLASS_COLUMNS[name]}"
            case MemberCount():
                m, u = self.alias("m"), self.alias("u")
                return (
                    f"(select count(*) from class_memberships {m} "
                    f"join users {u} on {u}.school_id = {m}.school_id and {u}.id = {m}.user_id "
                    f"where {m}.school_id = $1 and {m}.class_id = {c}.id and {u}.deleted_at is null)"
                )
            case Users(page, selection, of_class=True):
                return self.users(page, selection, class_ref=f"{c}.id")
        raise TypeError(node)


def statement(school_id: uuid.UUID, selection: Selection) -> tuple[str, list[Any]]:
    """SQL text and parameters for the whole response, `{"data": {...}}`, as one text value. The school is
    always the first parameter, so a statement can be kept and run for any school."""
    builder = _Builder(params=[school_id])
    data = builder.object(selection, builder.root)
    return f"{MARK} select json_build_object('data', {data})::text", builder.params


def _columns_shown(selection: Selection) -> tuple[str, ...]:
    """The users' columns a connection's edges show, and their id (the cursor's and the classes' key)."""
    shown = {"id"}
    for _, edges in selection:
        for _, part in edges.selection if isinstance(edges, Edges) else ():
            for _, shows in part.selection if isinstance(part, Node) else ():
                if isinstance(shows, Column):
                    shown.add(USER_COLUMNS[shows.name])
    return tuple(sorted(shown))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@functools.lru_cache(maxsize=1024)
def _users_sql(
    u: str,
    class_ref: str | None,
    status: UserStatus,
    given: tuple[str, ...],
    order: UserOrder,
    after: bool,
    shown: tuple[str, ...],
) -> tuple[str, str]:
    """Templates of a page's rows (its `shown` columns and sort key `k`, in order, not yet limited) and of
    its count, from db.users' filter over the users named `u`: `%(school)s`, `%(NAME)s` for each part of the
    filter `given`, and `%(after_value)s`, `%(after_id)s` for the keyset when `after`. A class roster's
    class is `class_ref`, an SQL expression."""
    users = aliased(User, name=u)
    values: dict[str, Any] = {name: bindparam(name) for name in given}
    if class_ref is not None:
        values["class_id"] = literal_column(class_ref)
    school = bindparam("school", type_=User.school_id.type)
    conditions = user_conditions(users, school_id=school, status=status, **values)
    count = select(func.count()).select_from(users).where(*conditions)
    key = sort_key(users, order.field)
    if after:
        value, last_id = bindparam("after_value", type_=key.type), bindparam("after_id", type_=User.id.type)
        conditions.append(
            after_position(key, users.id.expression, value, last_id, descending=order.descending)
        )
    rows = (
        select(*(getattr(users, column) for column in shown), key.label("k"))
        .where(*conditions)
        .order_by(*in_order(key, users.id.expression, descending=order.descending))
    )
    return _render(rows), _render(count)


@functools.lru_cache(maxsize=256)
def _rows_order(of: str, descending: bool) -> str:
    """db.users.in_order over a page's rows (`of` is "p." for the rows named p): sort key `k`, then id."""
    return ", ".join(
        _render(part)
        for part in in_order(literal_column(f"{of}k"), literal_column(f"{of}id"), descending=descending)
    )


@functools.lru_cache(maxsize=256)
def _class_order(c: str) -> str:
    return ", ".join(_render(part) for part in class_order(aliased(SchoolClass, name=c)))


def _render(clause: ClauseElement) -> str:
    return str(clause.compile(dialect=_DIALECT))


def _value(expression: str, column: str) -> str:
    return _isoformat(expression) if column in _TIMES else expression


def _isoformat(expression: str) -> str:
    """What Python's datetime.isoformat() gives for a UTC time: microseconds only when there are some."""
    utc = f"({expression} at time zone 'UTC')"
    return (
        f"(to_char({utc}, case when to_char({utc}, 'US') = '000000' then 'YYYY-MM-DD\"T\"HH24:MI:SS' "
        f"else 'YYYY-MM-DD\"T\"HH24:MI:SS.US' end) || '+00:00')"
    )


def _json_string(expression: str) -> str:
    """What Python's json.dumps() gives for a string: ASCII only, everything else escaped as it escapes it."""
    code = "ascii(t.ch)"
    slow = (
        "(select '\"' || string_agg(case "
        "when t.ch = '\"' then '\\\"' when t.ch = '\\' then '\\\\' "
        f"when {code} between 32 and 126 then t.ch "
        f"when {code} = 8 then '\\b' when {code} = 9 then '\\t' when {code} = 10 then '\\n' "
        f"when {code} = 12 then '\\f' when {code} = 13 then '\\r' "
        f"when {code} < 65536 then '\\u' || lpad(to_hex({code}), 4, '0') "
        f"else '\\u' || to_hex(55296 + (({code} - 65536) >> 10)) || '\\u' || to_hex(56320 + (({code} - 65536) & 1023)) "
        f"end, '' order by t.i) || '\"' from string_to_table({expression}, null) with ordinality as t(ch, i))"
    )
    return f"(case when {expression} ~ '^[ -~]*$' then to_json({expression})::text else {slow} end)"


def cursor(p: str, order_field: UserOrderField) -> str:
    """db.pagination.encode_cursor([sort value, id]) of row `p` (its sort key `k`, its `id`): URL-safe base64,
    unpadded, of compact JSON."""
    value = (
        _json_string(f"{p}.k")
        if order_field != UserOrderField.CREATED_AT
        else f"('\"' || {_isoformat(f'{p}.k')} || '\"')"
    )
    text = f"('[' || {value} || ',\"' || {p}.id::text || '\"]')"
    return f"rtrim(translate(encode(convert_to({text}, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')"
