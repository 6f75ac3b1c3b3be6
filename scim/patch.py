"""SCIM request bodies and PATCH (RFC 7644 3.5): what a POST or PUT says, and a document after a PATCH.

Both give the writable attributes of a resource under their canonical names, so the same code turns either
into a change. Attributes Rollcall does not keep are ignored; a path naming a read-only one is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from db.text import shown
from scim.filter import Compare, FilterSyntaxError, PatchPath, matches, parse_path
from scim.protocol import MISSING, PATCH_OP, ScimError, Shape, canonical_name, field_of, require_object


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
            found[top] = (
                None
                if value is None
                else {
                    name: part
                    for part_key, part in value.items()
                    if (name := canonical_name(part_key, shape.complex[top])) is not None
                }
            )
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
        raise ScimError(400, f"Unknown PATCH op '{shown(op)}': use add, replace or remove.", "invalidSyntax")
    path, value = field_of(operation, "path"), field_of(operation, "value")
    if path in (MISSING, None, ""):
        if op == "remove":
            raise ScimError(400, "A remove operation names its target in 'path'.", "noTarget")
        if not isinstance(value, Mapping):
            raise ScimError(
                400, "Without a path, an operation's value is an object of attributes.", "invalidValue"
            )
        for key, item in value.items():
            _write(found, shape, PatchPath(key), op, item, lenient=True)
        return
    if not isinstance(path, str):
        raise ScimError(400, "A PATCH path is a string.", "invalidPath")
    try:
        target = parse_path(path)
    except FilterSyntaxError as error:
        raise ScimError(400, f"The path '{shown(path)}' is not valid: {error}", "invalidPath") from None
    if op != "remove" and value is MISSING:
        raise ScimError(400, f"An {op} operation has a value.", "invalidValue")
    _write(found, shape, target, op, value, lenient=False)


def _write(
    found: dict[str, Any], shape: Shape, path: PatchPath, op: str, value: Any, *, lenient: bool
) -> None:
    top, sub = shape.resolve(path.attribute)
    if top is None:
        return  # an attribute Rollcall does not keep
    if top in shape.read_only:
        if lenient:
            return  # Okta sends the id along with the attributes it replaces
        raise ScimError(400, f"{top} is read-only.", "mutability")
    if top in shape.multi:
        if sub is not None:
            raise ScimError(
                400, f'Select values of {top} with a filter, as in {top}[value eq "..."].', "invalidPath"
            )
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
            if (name := canonical_name(key, shape.complex[top])) is not None:
                parts[name] = part
        found[top] = parts
        return
    if sub is not None:
        raise ScimError(400, f"{top} has no sub-attributes.", "invalidPath")
    found[top] = None if op == "remove" else value


def _identity(value: Any) -> str:
    found = field_of(value, "value") if isinstance(value, Mapping) else value
    return str(found).lower()


def _write_values(
    values: list[Any], subs: tuple[str, ...], path: PatchPath, op: str, value: Any
) -> list[Any]:
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
    sub = canonical_name(path.sub_attribute, subs) if path.sub_attribute else None
    if op == "remove":
        if path.sub_attribute is None:
            return [item for item, hit in zip(values, chosen, strict=True) if not hit]
        return [
            {k: v for k, v in item.items() if k.lower() != (sub or "").lower()} if hit else item
            for item, hit in zip(values, chosen, strict=True)
        ]
    if not any(chosen):
        if (
            op in ("add", "replace")
            and path.sub_attribute is not None
            and isinstance(path.filter, Compare)
            and path.filter.op == "eq"
        ):
            # Microsoft Entra sets `emails[type eq "work"].value` whether or not such a value exists yet.
            return [*values, {path.filter.path: path.filter.value, sub or path.sub_attribute: value}]
        raise ScimError(400, f"No value of {path.attribute} matches the filter.", "noTarget")
    if path.sub_attribute is not None:
        return [
            {**item, (sub or path.sub_attribute): value} if hit else item
            for item, hit in zip(values, chosen, strict=True)
        ]
    if not isinstance(value, Mapping):
        raise ScimError(400, f"The values of {path.attribute} are objects.", "invalidValue")
    return [dict(value) if hit else item for item, hit in zip(values, chosen, strict=True)]
