"""SCIM 2.0 (RFC 7643, RFC 7644) as Rollcall speaks it: errors, the writable attributes of a resource type,
PATCH, filters turned into SQL, paging and partial representations.

The operations on users and classes are in db/scim_users.py and db/scim_groups.py; HTTP is in gql/scim.py.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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

from db.errors import DomainError, ErrorCode
from db.scim_filter import (
    Compare,
    Filter,
    FilterSyntaxError,
    Logical,
    Not,
    PatchPath,
    Value,
    ValuePath,
    matches,
    parse_filter,
    parse_path,
)

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
CLASS_EXTENSION = "urn:rollcall:params:scim:schemas:extension:class:2.0:Group"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"

DEFAULT_COUNT = 100
MAX_COUNT = 1000
EXTERNAL_ID_MAX = 255
MISSING: Any = object()


class ScimError(Exception):
    """A request refused, the SCIM way: an HTTP status, and a `scimType` where RFC 7644 (3.12) names one."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [ERROR], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


_STATUS: dict[ErrorCode, tuple[int, str | None]] = {
    ErrorCode.USERNAME_TAKEN: (409, "uniqueness"),
    ErrorCode.CLASS_NAME_TAKEN: (409, "uniqueness"),
    ErrorCode.NOT_FOUND: (404, None),
    ErrorCode.VERSION_CONFLICT: (412, None),
    ErrorCode.CONCURRENT_CHANGE: (409, None),
    # Refused because of the resource's current state, which RFC 7644 files under "mutability".
    ErrorCode.LAST_ADMIN: (400, "mutability"),
    ErrorCode.USER_DELETED: (400, "mutability"),
    ErrorCode.CANNOT_DELETE_SELF: (400, "mutability"),
    ErrorCode.MANAGED_BY_PROVIDER: (403, None),
}


def scim_error(error: DomainError) -> ScimError:
    """The SCIM answer to a business error of the domain functions SCIM shares with GraphQL."""
    status, scim_type = _STATUS.get(error.problems[0].code, (400, "invalidValue"))
    return ScimError(status, " ".join(problem.message for problem in error.problems), scim_type)


def field_of(mapping: Mapping[str, Any], name: str) -> Any:
    """A member of a JSON object, whatever the case of its name (SCIM names ignore case), or MISSING."""
    return next((value for key, value in mapping.items() if key.lower() == name.lower()), MISSING)


def require_object(body: Any, schema: str) -> Mapping[str, Any]:
    """A request body: a JSON object whose `schemas`, when given, name `schema`."""
    if not isinstance(body, Mapping):
        raise ScimError(400, "The request body is a JSON object.", "invalidSyntax")
    schemas = field_of(body, "schemas")
    if schemas is not MISSING and (not isinstance(schemas, list)
                                   or schema.lower() not in {str(s).lower() for s in schemas}):
        raise ScimError(400, f"The request's schemas must include {schema}.", "invalidSyntax")
    return body


def text_of(value: Any, attribute: str) -> str | None:
    if value is None or value is MISSING:
        return None
    if not isinstance(value, str):
        raise ScimError(400, f"{attribute} is a string.", "invalidValue")
    return value


def flag_of(value: Any, attribute: str) -> bool | None:
    """A boolean; Microsoft Entra sends "True" and "False" as strings, so those are read too."""
    if value is None or value is MISSING or isinstance(value, bool):
        return None if value is MISSING else value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise ScimError(400, f"{attribute} is true or false.", "invalidValue")


def external_id_of(value: Any) -> str | None:
    external_id = text_of(value, "externalId")
    if external_id is not None and len(external_id) > EXTERNAL_ID_MAX:
        raise ScimError(400, f"An externalId is at most {EXTERNAL_ID_MAX} characters.", "invalidValue")
    return external_id or None


def weak_etag(version: object) -> str:
    return f'W/"{version}"'


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}


def require_version(current: str, if_match: str | None) -> None:
    """`If-Match`: a change applies only to the version the client read (compared weakly: RFC 7644 3.14)."""
    if if_match is None or if_match.strip() == "*":
        return
    if current.removeprefix("W/").strip('"') not in _tags(if_match):
        raise ScimError(412, f"The resource has changed since you read it: it is now at version {current}.")


def unchanged(current: str, if_none_match: str | None) -> bool:
    """`If-None-Match`: the client already has this version."""
    return if_none_match is not None and (if_none_match.strip() == "*"
                                          or current.removeprefix("W/").strip('"') in _tags(if_none_match))


@dataclass(frozen=True, slots=True)
class Shape:
    """The attributes of a resource type that requests may name, by their canonical names."""

    core: str
    simple: tuple[str, ...]
    complex: Mapping[str, tuple[str, ...]]  # single-valued complex attributes, and schema extensions
    multi: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # multi-valued complex attributes
    read_only: tuple[str, ...] = ("id", "meta", "schemas")

    def resolve(self, path: str) -> tuple[str | None, str | None]:
        """The attribute and sub-attribute a path names (as the schema spells them, when Rollcall keeps them);
        None for an attribute Rollcall does not keep, such as `emails` or the enterprise extension."""
        lower = path.lower()
        for urn in (name for name in self.complex if name.startswith("urn:")):
            if lower == urn.lower():
                return urn, None
            if lower.startswith(urn.lower() + ":"):
                return urn, _canonical(path[len(urn) + 1:], self.complex[urn])
        if lower.startswith(self.core.lower() + ":"):
            path = path[len(self.core) + 1:]
        elif lower.startswith("urn:"):
            return None, None
        name, _, sub = path.partition(".")
        everything = (*self.simple, *self.complex, *self.multi, *self.read_only)
        top = _canonical(name, everything)
        if top is None:
            return None, None
        if not sub:
            return top, None
        return top, _canonical(sub, (*self.complex.get(top, ()), *self.multi.get(top, ()))) or sub


def _canonical(name: str, names: Sequence[str]) -> str | None:
    return next((known for known in names if known.lower() == name.lower()), None)


def document(body: Mapping[str, Any], shape: Shape) -> dict[str, Any]:
    """The writable attributes of a POST or PUT body, under their canonical names. Attributes Rollcall does
    not keep are ignored, and read-only ones too (RFC 7644 3.5.1)."""
    found: dict[str, Any] = {}
    for key, value in body.items():
        top, sub = shape.resolve(key)
        if top is None or top in shape.read_only or sub is not None:
            continue
        if top in shape.complex:
            if value is not None and not isinstance(value, Mapping):
                raise ScimError(400, f"{top} is an object.", "invalidValue")
            found[top] = None if value is None else {
                name: part for part_key, part in value.items()
                if (name := _canonical(part_key, shape.complex[top])) is not None}
        else:
            found[top] = value
    return found


def patched(current: Mapping[str, Any], request: Any, shape: Shape) -> dict[str, Any]:
    """The document after a PATCH request's operations, applied in order (RFC 7644 3.5.2), all or none."""
    body = require_object(request, PATCH_OP)
    operations = field_of(body, "Operations")
    if not isinstance(operations, list) or not operations:
        raise ScimError(400, "A PATCH request has a non-empty list of Operations.", "invalidSyntax")
    found = copy.deepcopy(dict(current))
    for operation in operations:
        _apply(found, operation, shape)
    return found


def _apply(found: dict[str, Any], operation: Any, shape: Shape) -> None:
    if not isinstance(operation, Mapping):
        raise ScimError(400, "Each PATCH operation is an object.", "invalidSyntax")
    op = field_of(operation, "op")
    op = op.lower() if isinstance(op, str) else op
    if op not in ("add", "replace", "remove"):
        raise ScimError(400, f"Unknown PATCH op {op!r}: use add, replace or remove.", "invalidSyntax")
    path, value = field_of(operation, "path"), field_of(operation, "value")
    if path in (MISSING, None, ""):
        if op == "remove":
            raise ScimError(400, "A remove operation names its target in 'path'.", "noTarget")
        if not isinstance(value, Mapping):
            raise ScimError(400, "Without a path, an operation's value is an object of attributes.",
                            "invalidValue")
        for key, item in value.items():
            _write(found, shape, PatchPath(key), op, item, lenient=True)
        return
    if not isinstance(path, str):
        raise ScimError(400, "A PATCH path is a string.", "invalidPath")
    try:
        target = parse_path(path)
    except FilterSyntaxError as error:
        raise ScimError(400, f"The path '{path}' is not valid: {error}", "invalidPath") from None
    if op != "remove" and value is MISSING:
        raise ScimError(400, f"An {op} operation has a value.", "invalidValue")
    _write(found, shape, target, op, value, lenient=False)


def _write(found: dict[str, Any], shape: Shape, path: PatchPath, op: str, value: Any, *,
           lenient: bool) -> None:
    top, sub = shape.resolve(path.attribute)
    if top is None:
        return  # an attribute Rollcall does not keep
    if top in shape.read_only:
        if lenient:
            return  # Okta sends the id along with the attributes it replaces
        raise ScimError(400, f"{top} is read-only.", "mutability")
    if top in shape.multi:
        if sub is not None:
            raise ScimError(400, f"Select values of {top} with a filter, as in {top}[value eq \"...\"].",
                            "invalidPath")
        found[top] = _write_values(list(found.get(top) or []), shape.multi[top], path, op, value)
        return
    if path.filter is not None:
        raise ScimError(400, f"{top} has a single value; a filter cannot select it.", "invalidPath")
    if top in shape.complex:
        parts = dict(found.get(top) or {})
        if sub is not None:
            if sub in shape.complex[top]:
                parts[sub] = None if op == "remove" else value
                found[top] = parts
            return
        if op == "remove":
            found[top] = None
            return
        if not isinstance(value, Mapping):
            raise ScimError(400, f"The value of {top} is an object.", "invalidValue")
        for key, part in value.items():
            if (name := _canonical(key, shape.complex[top])) is not None:
                parts[name] = part
        found[top] = parts
        return
    if sub is not None:
        raise ScimError(400, f"{top} has no sub-attributes.", "invalidPath")
    found[top] = None if op == "remove" else value


def _identity(value: Any) -> str:
    found = field_of(value, "value") if isinstance(value, Mapping) else value
    return str(found).lower()


def _write_values(values: list[Any], subs: tuple[str, ...], path: PatchPath, op: str,
                  value: Any) -> list[Any]:
    """A multi-valued attribute after one operation. Values are told apart by their `value` sub-attribute."""
    if path.filter is None:
        if op == "remove" and value is MISSING:
            return []
        given = value if isinstance(value, list) else [value]
        if not all(isinstance(item, Mapping) for item in given):
            raise ScimError(400, f"The values of {path.attribute} are objects.", "invalidValue")
        if op == "replace":
            return [dict(item) for item in given]
        if op == "add":
            known = {_identity(item) for item in values}
            return values + [dict(item) for item in given if _identity(item) not in known]
        # Microsoft Entra removes members by value rather than with a filter.
        leaving = {_identity(item) for item in given}
        return [item for item in values if _identity(item) not in leaving]
    chosen = [isinstance(item, Mapping) and matches(path.filter, item) for item in values]
    sub = _canonical(path.sub_attribute, subs) if path.sub_attribute else None
    if op == "remove":
        if path.sub_attribute is None:
            return [item for item, hit in zip(values, chosen, strict=True) if not hit]
        return [{k: v for k, v in item.items() if k.lower() != (sub or "").lower()} if hit else item
                for item, hit in zip(values, chosen, strict=True)]
    if not any(chosen):
        raise ScimError(400, f"No value of {path.attribute} matches the filter.", "noTarget")
    if path.sub_attribute is not None:
        return [{**item, (sub or path.sub_attribute): value} if hit else item
                for item, hit in zip(values, chosen, strict=True)]
    if not isinstance(value, Mapping):
        raise ScimError(400, f"The values of {path.attribute} are objects.", "invalidValue")
    return [dict(value) if hit else item for item, hit in zip(values, chosen, strict=True)]


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
            raise ScimError(400, f"Filtering on '{path}' is not supported.", "invalidFilter")
        target, sub = located
        if isinstance(target, Values) and sub is not None:
            column = target.columns.get(sub.lower())
            if column is None:
                raise ScimError(400, f"Filtering on '{path}' is not supported.", "invalidFilter")
            return Values({"value": column}, target.exists)
        return target

    def sort_key(self, path: str) -> SQLColumnExpression[Any]:
        located = self.find(path)
        if located is None or not isinstance(located[0], Column):
            raise ScimError(400, f"Sorting by '{path}' is not supported.", "invalidValue")
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
                raise ScimError(400, f"'{path}' has a single value; a value filter cannot apply.",
                                "invalidFilter")
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
        raise ScimError(400, f"Filtering on '{path}.{sub}' is not supported.", "invalidFilter")
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
    return ScimError(400, f"'{path} {op} {value!r}' compares the attribute with a value of the wrong kind.",
                     "invalidFilter")


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
    value = field_of(params, name)
    if value is MISSING or value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ScimError(400, f"{name} is a whole number.", "invalidValue")


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


async def page_of(session: AsyncSession, query: Select[Any], table: Table, asked: ListQuery,
                  order: Sequence[SQLColumnExpression[Any]]) -> tuple[int, list[Any]]:
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
    return {"schemas": [LIST_RESPONSE], "totalResults": total, "startIndex": asked.start_index,
            "itemsPerPage": len(resources), "Resources": resources}


def projected(resource: dict[str, Any], shape: Shape, attributes: Sequence[str],
              excluded: Sequence[str]) -> dict[str, Any]:
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
