"""A OneRoster list as ONE SQL statement whose JSON PostgreSQL builds: the filter compiled to SQLAlchemy
conditions with bound parameters (never text spliced into SQL), the sort, the page and the projection, and the
total count beside it. It runs in the caller's school scope, under row-level security, and every source names
the school too: a filter's alternatives (OR) are all inside the condition that keeps to the school.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Subquery,
    Text,
    and_,
    bindparam,
    cast,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db import rostering
from db.text import shown, storable_time
from oneroster.filter import Comparison, Filter
from oneroster.protocol import ListQuery, bad_request
from oneroster.resources import Kind, Resource

# A condition on the source's own columns (a nested endpoint's: a class's students, a term's grading periods).
Scope = Callable[[Subquery], ColumnElement[bool]]


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    json: str  # the JSON array of the page's objects


def _moment(value: str, kind: Kind, path: str) -> date | datetime:
    try:
        if kind == Kind.DATE:
            return date.fromisoformat(value[:10]) if len(value) >= 10 else date.fromisoformat(value)
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        moment = storable_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    except ValueError:
        raise bad_request(
            f"'{shown(value)}' is not a date for {path} (use 2026-09-01 or 2026-09-01T08:00:00Z).",
            "invalid_filter_field",
        ) from None
    return moment


def _compare(column: ColumnElement[Any], comparison: Comparison, kind: Kind) -> ColumnElement[bool]:
    op, value, path = comparison.op, comparison.value, comparison.field
    right: Any
    if kind == Kind.BOOLEAN:
        if value not in ("true", "false") or op not in ("=", "!="):
            raise bad_request(f"{path} is true or false, compared with = or !=.", "invalid_filter_field")
        wanted = value == "true"
        return column.is_(wanted) if op == "=" else column.is_not(wanted)
    if kind in (Kind.DATE, Kind.DATETIME):
        if op == "~":
            raise bad_request(
                f"{path} is a date: compare it with =, !=, >, >=, < or <=.", "invalid_filter_field"
            )
        right = _moment(value, kind, path)
        if kind == Kind.DATETIME:
            column = func.date_trunc("milliseconds", column)
    else:
        right = value
        if op == "~":
            escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return func.coalesce(column.ilike(f"%{escaped}%", escape="\\"), false())
    match op:
        case "=":
            condition: ColumnElement[bool] = column == right
        case "!=":
            return column.is_distinct_from(right)
        case ">":
            condition = column > right
        case ">=":
            condition = column >= right
        case "<":
            condition = column < right
        case "<=":
            condition = column <= right
        case _:
            raise AssertionError(op)
    return func.coalesce(condition, false())


def condition(resource: Resource, src: Subquery, found: Filter) -> ColumnElement[bool]:
    """The filter as SQL over the source's columns; every value a bound parameter."""
    return or_(
        *(
            and_(*(_compare(src.c[c.field], c, resource.paths[c.field]) for c in conjunction))
            for conjunction in found
        )
    )


def _order(resource: Resource, src: Subquery, asked: ListQuery) -> list[ColumnElement[Any]]:
    sourced_id = src.c[resource.sourced_id_order or "sourcedId"]
    keys = [src.c[name] if name != "sourcedId" else sourced_id for name in asked.sort]
    if "sourcedId" not in asked.sort:
        keys.append(sourced_id)  # a stable order, so pages neither repeat nor skip
    return [key.desc().nulls_last() if asked.descending else key.asc().nulls_first() for key in keys]


def list_statement(
    resource: Resource,
    source: rostering.Source,
    asked: ListQuery,
    base_url: str,
    scope: Scope | None,
) -> Select[int, str]:
    src = source.subquery("src")
    where = [scope(src) if scope is not None else true()]
    if asked.filter is not None:
        where.append(condition(resource, src, asked.filter))
    base = bindparam("base_url", base_url, type_=String)
    page = (
        select(resource.document(src, base, asked.fields).label("doc"))
        .where(*where)
        .order_by(*_order(resource, src, asked))
        .limit(asked.limit)
        .offset(asked.offset)
        .subquery("page")
    )
    total = select(func.count()).select_from(src).where(*where).scalar_subquery()
    documents = select(
        func.coalesce(func.json_agg(page.c.doc), literal_column("'[]'::json"))
    ).scalar_subquery()
    return select(total.label("total"), cast(documents, Text).label("page"))


async def read_page(
    session: AsyncSession,
    resource: Resource,
    roster: rostering.Roster,
    asked: ListQuery,
    base_url: str,
    scope: Scope | None = None,
) -> Page:
    statement = list_statement(resource, resource.source(roster), asked, base_url, scope)
    total, documents = (await session.execute(statement)).one()
    return Page(total=int(total), json=str(documents))


async def read_one(
    session: AsyncSession,
    resource: Resource,
    roster: rostering.Roster,
    sourced_id: str,
    base_url: str,
    fields: tuple[str, ...] | None,
    scope: Scope | None = None,
) -> str | None:
    """One object's JSON by its sourcedId, or None."""
    src = resource.source(roster).subquery("src")
    base = bindparam("base_url", base_url, type_=String)
    where = [_is(resource, src, sourced_id)]
    if scope is not None:
        where.append(scope(src))
    statement = select(cast(resource.document(src, base, fields), Text)).where(*where).limit(1)
    found = (await session.execute(statement)).scalar_one_or_none()
    return None if found is None else str(found)


async def exists_one(
    session: AsyncSession,
    resource: Resource,
    roster: rostering.Roster,
    sourced_id: str,
    scope: Scope | None = None,
) -> bool:
    src = resource.source(roster).subquery("src")
    where = [_is(resource, src, sourced_id)]
    if scope is not None:
        where.append(scope(src))
    return (await session.execute(select(select(src.c.sourcedId).where(*where).exists()))).scalar_one()


def _is(resource: Resource, src: Subquery, sourced_id: str) -> ColumnElement[bool]:
    """The row with this sourcedId: by the row's own uuid where there is one (its key), else by the text."""
    if resource.sourced_id_order is None:
        return src.c.sourcedId == sourced_id
    found = uuid_or_none(sourced_id)
    return false() if found is None else src.c[resource.sourced_id_order] == found


def uuid_or_none(sourced_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(sourced_id)
    except ValueError:
        return None


def hidden(src: Subquery, name: str) -> ColumnElement[Any]:
    return src.c[name]


def all_of(conditions: Sequence[Scope]) -> Scope:
    return lambda src: and_(*(found(src) for found in conditions))
