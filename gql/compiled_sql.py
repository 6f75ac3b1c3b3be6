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
from db.users import (
    CURSOR_TAG_LENGTH,
    ORDERINGS,
    KeyKind,
    Position,
    UserFilter,
    UserOrder,
    UserOrderField,
    UserStatus,
    cursor_scope,
    cursor_tag,
    filter_values,
    in_order,
    page_request,
    past_position,
    sort_keys,
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
class HasPreviousPage:
    pass


@dataclass(frozen=True, slots=True)
class StartCursor:
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
    """Which users, in which order, from where: as list_users reads them (db.users.page_request)."""

    where: UserFilter
    order: UserOrder
    size: int
    backward: bool = False
    after: Position | None = None
    before: Position | None = None


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
    | HasPreviousPage
    | StartCursor
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


def users_page(
    where: UserFilter,
    order: UserOrder,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> UsersPage:
    """The page list_users would read, or the DomainError it would raise for its arguments. A class roster's
    cursors name their class, which only the statement knows: the general path reads a roster from a cursor."""
    request = page_request(order, where, first=first, after=after, last=last, before=before)
    return UsersPage(
        where=where,
        order=order,
        size=request.size,
        backward=request.backward,
        after=request.after,
        before=request.before,
    )


@dataclass
class _Rows:
    """How a page's rows are held: `numbered` (1, 2, ... in the page's order, with the count of rows read)
    when pageInfo needs to know whether there is more; and what is gathered for all of them at once (the
    class alias and aggregate of one teachingClasses)."""

    numbered: bool
    # The page's own order, and whether it is read from the end (the rows are then read the other way).
    descending: bool = False
    backward: bool = False
    keys: int = 1
    teaching: tuple[str, str] | None = None
    # Whether one teachingClasses is gathered for all the rows at once (a page), or read user by user.
    gathers: bool = True

    def order(self, p: str = "", *, fetched: bool = True) -> str:
        """The order the rows are read in, or (not `fetched`) the page's own: over their sort keys `k0`, ...,
        then `id` (of the rows named `p`, if given)."""
        descending = self.descending != (fetched and self.backward)
        return _rows_order(f"{p}." if p else "", self.keys, descending)


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
                held = _Rows(numbered=False, gathers=False)
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
        bounds = tuple(side for side in ("after", "before") if getattr(page, side) is not None)
        rows_sql, count_sql = _users_sql(
            u, class_ref, page.where.status, tuple(given), page.order, bounds, page.backward, shown
        )
        slots = {"school": "$1", **{name: self.param(value) for name, value in given.items()}}
        total = f"({count_sql % slots})"
        held = _Rows(
            numbered=any(isinstance(node, PageInfo) for _, node in selection),
            descending=page.order.descending,
            backward=page.backward,
            keys=len(ORDERINGS[page.order.field]),
        )
        tag = _literal(cursor_tag(cursor_scope(page.order, page.where)))
        if class_ref is not None:
            # A roster's cursors name its class: the hash of the scope with the class's own id.
            scope = _literal(cursor_scope(page.order, page.where))
            tag = f"left(encode(sha256(convert_to({scope} || {class_ref}::text, 'UTF8')), 'hex'), {CURSOR_TAG_LENGTH})"
        body = self.object(selection, lambda node: self.connection_part(node, p, page, total, held, tag))
        if not any(isinstance(node, Edges | PageInfo) for _, node in selection):
            return body
        for side in bounds:
            position: Position = getattr(page, side)
            slots[f"{side}_id"] = self.param(position.id)
            for i, value in enumerate(position.values):
                slots[f"{side}_{i}"] = self.param(value.value if isinstance(value, UserType) else value)
        rows = f"{r} {p}"
        if held.numbered:
            rows = (
                f"(select {r}.*, row_number() over (order by {held.order()}) as n, count(*) over () as rows "
                f"from {r}) {p}"
            )
        if held.teaching is not None:
            c, classes = held.teaching
            m = self.alias("m")
            keys = tuple(f"k{i}" for i in range(held.keys))
            grouped = ", ".join(
                f"{p}.{column}" for column in (*(("n", "rows") if held.numbered else ()), *keys, *shown)
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

    def connection_part(
        self, node: Selected, p: str, page: UsersPage, total: str, held: _Rows, tag: str
    ) -> str:
        size = page.size
        match node:
            case Typename(name):
                return _literal(name)
            case TotalCount():
                return total
            case Edges(selection):
                edge = self.object(selection, lambda part: self.edge_part(part, p, page, held, tag))
                if held.numbered:
                    # Rows are numbered in the order read: a page from the end is put back in its own order.
                    way = " desc" if page.backward else ""
                    return (
                        f"coalesce(json_agg({edge} order by {p}.n{way}) filter (where {p}.n <= {size}), "
                        "'[]'::json)"
                    )
                return f"coalesce(json_agg({edge} order by {held.order(p, fetched=False)}), '[]'::json)"
            case PageInfo(selection):
                return self.object(selection, lambda part: self.page_info_part(part, p, page, tag))
        raise TypeError(node)

    def edge_part(self, node: Selected, p: str, page: UsersPage, held: _Rows, tag: str) -> str:
        match node:
            case Typename(name):
                return _literal(name)
            case Cursor():
                return cursor(p, page.order.field, tag)
            case Node(selection):
                return self.object(selection, lambda part: self.user_part(part, p, held))
        raise TypeError(node)

    def page_info_part(self, node: Selected, p: str, page: UsersPage, tag: str) -> str:
        # The rows read are numbered from 1 in the order read; one more than the page says there is more.
        more = f"count({p}.n) > {page.size}"
        read_first = f"(array_agg({cursor(p, page.order.field, tag)}) filter (where {p}.n = 1 and {p}.n <= {page.size}))[1]"
        read_last = (
            f"(array_agg({cursor(p, page.order.field, tag)}) "
            f"filter (where {p}.n = least({p}.rows, {page.size})))[1]"
        )
        match node:
            case Typename(name):
                return _literal(name)
            case HasNextPage():
                return ("true" if page.before is not None else "false") if page.backward else more
            case HasPreviousPage():
                return more if page.backward else ("true" if page.after is not None else "false")
            case StartCursor():
                return read_last if page.backward else read_first
            case EndCursor():
                return read_first if page.backward else read_last
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
    bounds: tuple[str, ...],
    backward: bool,
    shown: tuple[str, ...],
) -> tuple[str, str]:
    """Templates of a page's rows (its `shown` columns and sort keys `k0`, ..., in the order read, not yet
    limited) and of its count, from db.users' filter over the users named `u`: `%(school)s`, `%(NAME)s` for
    each part of the filter `given`, and `%(after_0)s`, ..., `%(after_id)s` (and `before_...`) for the keyset
    condition on each side in `bounds`. A page from the end (`backward`) is read from the end. A class
    roster's class is `class_ref`, an SQL expression."""
    users = aliased(User, name=u)
    values: dict[str, Any] = {name: bindparam(name) for name in given}
    if class_ref is not None:
        values["class_id"] = literal_column(class_ref)
    school = bindparam("school", type_=User.school_id.type)
    conditions = user_conditions(users, school_id=school, status=status, **values)
    count = select(func.count()).select_from(users).where(*conditions)
    keys = sort_keys(users, order.field)
    for side in bounds:
        at = [bindparam(f"{side}_{i}", type_=key.type) for i, key in enumerate(keys)]
        conditions.append(
            past_position(
                keys,
                users.id.expression,
                at,
                bindparam(f"{side}_id", type_=User.id.type),
                descending=order.descending,
                after=side == "after",
            )
        )
    rows = (
        select(
            *(getattr(users, column) for column in shown), *(key.label(f"k{i}") for i, key in enumerate(keys))
        )
        .where(*conditions)
        .order_by(*in_order(keys, users.id.expression, descending=order.descending != backward))
    )
    return _render(rows), _render(count)


@functools.lru_cache(maxsize=256)
def _rows_order(of: str, keys: int, descending: bool) -> str:
    """db.users.in_order over a page's rows (`of` is "p." for the rows named p): sort keys `k0`, ..., then id."""
    return ", ".join(
        _render(part)
        for part in in_order(
            [literal_column(f"{of}k{i}") for i in range(keys)],
            literal_column(f"{of}id"),
            descending=descending,
        )
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


def cursor(p: str, order_field: UserOrderField, tag: str) -> str:
    """db.pagination.encode_cursor([tag, sort values..., id]) of row `p` (its sort keys `k0`, ..., its `id`),
    `tag` an SQL expression for the cursor's tag: URL-safe base64, unpadded, of compact JSON."""
    values = [
        f"('\"' || {_isoformat(f'{p}.k{i}')} || '\"')"
        if key.kind == KeyKind.TIME
        else _json_string(f"{p}.k{i}")
        for i, key in enumerate(ORDERINGS[order_field])
    ]
    text = f"""('["' || {tag} || '",' || {" || ',' || ".join(values)} || ',"' || {p}.id::text || '"]')"""
    return f"rtrim(translate(encode(convert_to({text}, 'UTF8'), 'base64'), E'+/\\n', '-_'), '=')"
