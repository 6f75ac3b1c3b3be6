"""SCIM lists and searches (RFC 7644 3.4.2): filters turned into SQL, sorting, paging, and partial
representations (`attributes`, `excludedAttributes`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias
from typing import cast as cast_type

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    String,
    and_,
    cast,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db.text import shown
from scim.filter import Compare, Filter, FilterSyntaxError, Logical, Not, Value, ValuePath, parse_filter
from scim.protocol import (
    DEFAULT_COUNT,
    LIST_RESPONSE,
    MAX_COUNT,
    MISSING,
    ScimError,
    Shape,
    field_of,
    text_of,
)


@dataclass(frozen=True, slots=True)
class Column:
    """What an attribute is in SQL, for filters and sorting."""

    expr: SQLColumnExpression[Any]
    kind: str = "string"  # "string", "id", "boolean" or "datetime"
    case_exact: bool = False


@dataclass(frozen=True, slots=True)
class Values:
    """A multi-valued attribute: a condition on its values is an EXISTS over them."""

    columns: Mapping[str, Column]
    exists: Callable[[ColumnElement[bool]], ColumnElement[bool]]


Target: TypeAlias = Column | Values


def attribute_key(top: str, sub: str | None = None) -> str:
    return f"{top}.{sub}".lower() if sub else top.lower()


@dataclass(frozen=True, slots=True)
class Table:
    """The filterable and sortable attributes of a resource type, keyed by `attribute_key`."""

    shape: Shape
    attributes: Mapping[str, Target]

    def find(self, path: str) -> tuple[Target, str | None] | None:
        top, sub = self.shape.resolve(path)
        if top is None:
            return None
        if (target := self.attributes.get(attribute_key(top, sub))) is not None:
            return target, None
        whole = self.attributes.get(attribute_key(top))
        return (whole, sub) if isinstance(whole, Values) else None

    def condition(self, found: Filter) -> ColumnElement[bool]:
        return _condition(found, self._lookup)

    def _lookup(self, path: str) -> Target:
        located = self.find(path)
        if located is None:
            raise ScimError(400, f"Filtering on '{shown(path)}' is not supported.", "invalidFilter")
        target, sub = located
        if isinstance(target, Values) and sub is not None:
            column = target.columns.get(sub.lower())
            if column is None:
                raise ScimError(400, f"Filtering on '{shown(path)}' is not supported.", "invalidFilter")
            return Values({"value": column}, target.exists)
        return target

    def sort_key(self, path: str) -> SQLColumnExpression[Any]:
        located = self.find(path)
        if located is None or not isinstance(located[0], Column):
            raise ScimError(400, f"Sorting by '{shown(path)}' is not supported.", "invalidValue")
        column = located[0]
        return func.lower(column.expr) if column.kind == "string" and not column.case_exact else column.expr


def _condition(found: Filter, lookup: Callable[[str], Target]) -> ColumnElement[bool]:
    match found:
        case Logical("and", left, right):
            return and_(_condition(left, lookup), _condition(right, lookup))
        case Logical(_, left, right):
            return or_(_condition(left, lookup), _condition(right, lookup))
        case Not(inner):
            return not_(_condition(inner, lookup))
        case ValuePath(path, inner):
            values = lookup(path)
            if not isinstance(values, Values):
                raise ScimError(
                    400, f"'{shown(path)}' has a single value; a value filter cannot apply.", "invalidFilter"
                )
            return values.exists(_condition(inner, lambda sub: _sub_column(values, path, sub)))
        case Compare(path, op, value):
            target = lookup(path)
            if isinstance(target, Values):
                return target.exists(_compare(target.columns["value"], op, value, path))
            return _compare(target, op, value, path)
    raise AssertionError(found)


def _sub_column(values: Values, path: str, sub: str) -> Column:
    column = values.columns.get(sub.lower())
    if column is None:
        raise ScimError(400, f"Filtering on '{shown(f'{path}.{sub}')}' is not supported.", "invalidFilter")
    return column


def _ordered(left: Any, op: str, right: Any) -> ColumnElement[bool]:
    match op:
        case "eq":
            return left == right  # type: ignore[no-any-return]
        case "ne":
            return left != right  # type: ignore[no-any-return]
        case "gt":
            return left > right  # type: ignore[no-any-return]
        case "ge":
            return left >= right  # type: ignore[no-any-return]
        case "lt":
            return left < right  # type: ignore[no-any-return]
        case "le":
            return left <= right  # type: ignore[no-any-return]
    raise AssertionError(op)


def _bad(path: str, op: str, value: Value) -> ScimError:
    return ScimError(
        400,
        f"'{shown(f'{path} {op} {value!r}')}' compares the attribute with a value of the wrong kind.",
        "invalidFilter",
    )


def _compare(column: Column, op: str, value: Value, path: str) -> ColumnElement[bool]:
    expr = column.expr
    if op == "pr":
        return true() if column.kind == "boolean" else expr.is_not(None)
    if value is None:
        if op not in ("eq", "ne"):
            raise _bad(path, op, value)
        return expr.is_(None) if op == "eq" else expr.is_not(None)
    if column.kind == "boolean":
        if not isinstance(value, bool) or op not in ("eq", "ne"):
            raise _bad(path, op, value)
        condition = cast_type(ColumnElement[bool], expr)
        return condition if value == (op == "eq") else not_(condition)
    if column.kind == "datetime":
        if not isinstance(value, str) or op in ("co", "sw", "ew"):
            raise _bad(path, op, value)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _bad(path, op, value) from None
        return _ordered(expr, op, moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    if not isinstance(value, str):
        raise _bad(path, op, value)
    if column.kind == "id":
        if op in ("eq", "ne"):
            try:
                wanted = uuid.UUID(value)
            except ValueError:
                return false() if op == "eq" else true()
            return _ordered(expr, op, wanted)
        expr = cast(expr, String)
    if op in ("co", "sw", "ew"):
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = {"co": f"%{escaped}%", "sw": f"{escaped}%", "ew": f"%{escaped}"}[op]
        return expr.like(pattern, escape="\\") if column.case_exact else expr.ilike(pattern, escape="\\")
    left, right = (expr, value) if column.case_exact else (func.lower(expr), value.lower())
    if op == "ne":
        return or_(expr.is_(None), left != right)
    return _ordered(left, op, right)


_WHOLE = re.compile(r"[+-]?[0-9]{1,12}")
MAX_WHOLE = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a list or search asks for (RFC 7644 3.4.2 and 3.4.3)."""

    filter: Filter | None = None
    sort_by: str | None = None
    descending: bool = False
    start_index: int = 1
    count: int = DEFAULT_COUNT
    attributes: tuple[str, ...] = ()
    excluded_attributes: tuple[str, ...] = ()


def _whole(params: Mapping[str, Any], name: str, default: int) -> int:
    """A whole number; below 1 means 1 for startIndex and 0 for count (RFC 7644 3.4.2.4), and one past
    PostgreSQL's integers is refused rather than sent."""
    value = field_of(params, name)
    if value is MISSING or value is None or value == "":
        return default
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_WHOLE:
        return value
    raise ScimError(400, f"{name} is a whole number up to {MAX_WHOLE}.", "invalidValue")


def attribute_names(params: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = field_of(params, name)
    if value is MISSING or value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, list) or not all(isinstance(part, str) for part in parts):
        raise ScimError(400, f"{name} is a list of attribute names.", "invalidValue")
    return tuple(part.strip() for part in parts if part.strip())


def list_query(params: Mapping[str, Any]) -> ListQuery:
    """A list request from URL query parameters, or a search from its SearchRequest body: same names."""
    text = field_of(params, "filter")
    parsed = None
    if text is not MISSING and text is not None:
        if not isinstance(text, str):
            raise ScimError(400, "A filter is a string.", "invalidFilter")
        try:
            parsed = parse_filter(text)
        except FilterSyntaxError as error:
            raise ScimError(400, f"The filter is not valid: {error}", "invalidFilter") from None
    sort_by = field_of(params, "sortBy")
    order = field_of(params, "sortOrder")
    order = "ascending" if order in (MISSING, None, "") else order
    if not isinstance(order, str) or order.lower() not in ("ascending", "descending"):
        raise ScimError(400, "sortOrder is ascending or descending.", "invalidValue")
    return ListQuery(
        filter=parsed,
        sort_by=text_of(sort_by, "sortBy") or None,
        descending=order.lower() == "descending",
        start_index=max(_whole(params, "startIndex", 1), 1),
        count=min(max(_whole(params, "count", DEFAULT_COUNT), 0), MAX_COUNT),
        attributes=attribute_names(params, "attributes"),
        excluded_attributes=attribute_names(params, "excludedAttributes"),
    )


async def page_of(
    session: AsyncSession,
    query: Select[Any],
    table: Table,
    asked: ListQuery,
    order: Sequence[SQLColumnExpression[Any]],
) -> tuple[int, list[Any]]:
    """The total matching the filter, and the page asked for: sorted by `sortBy`, then by `order`."""
    if asked.filter is not None:
        query = query.where(table.condition(asked.filter))
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    if asked.count == 0:
        return total, []
    keys = list(order)
    if asked.sort_by:
        key = table.sort_key(asked.sort_by)
        keys.insert(0, (key.desc() if asked.descending else key.asc()).nulls_last())
    rows = await session.execute(query.order_by(*keys).offset(asked.start_index - 1).limit(asked.count))
    return total, list(rows.scalars())


def list_response(total: int, asked: ListQuery, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": asked.start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def projected(
    resource: dict[str, Any], shape: Shape, attributes: Sequence[str], excluded: Sequence[str]
) -> dict[str, Any]:
    """The resource with only the attributes asked for, or without the ones excluded (RFC 7644 3.4.2.5); `id`
    and `schemas` are always returned."""
    if not attributes and not excluded:
        return resource
    keep = [shape.resolve(path) for path in attributes]
    drop = [shape.resolve(path) for path in excluded]
    found: dict[str, Any] = {}
    for key, value in resource.items():
        if key in ("id", "schemas"):
            found[key] = value
            continue
        if attributes:
            subs = [sub for top, sub in keep if top == key]
            if not subs:
                continue
            if None not in subs and isinstance(value, dict):
                value = {name: part for name, part in value.items() if name in subs}
        else:
            subs = [sub for top, sub in drop if top == key]
            if None in subs:
                continue
            if subs and isinstance(value, dict):
                value = {name: part for name, part in value.items() if name not in subs}
        if value not in ({}, None):
            found[key] = value
    return found
