"""Request bodies as /graphql and /scim/v2 read them: JSON documents, and where a multipart request puts its
files.

Both are plain functions over what the client sent; anything they cannot read is a `BadBody`, whose message
is meant for the client (each surface turns it into its own 400).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, NoReturn

from db.text import shown

# No request Rollcall reads nests deeper; far deeper, Python's own recursion (json, deepcopy) gives up.
MAX_DEPTH = 64


class BadBody(ValueError):
    """The body is not one Rollcall reads; the message says why."""


def _no_constant(name: str) -> NoReturn:
    raise BadBody(f"{name} is not a JSON number.")


def nesting_depth(value: object) -> int:
    """How deeply lists and objects nest in a decoded document (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def read_json(data: str | bytes) -> Any:
    """A JSON document of UTF-8 text nested at most MAX_DEPTH deep; no NaN, Infinity or lone surrogate."""
    too_deep = BadBody(f"The request body is nested more than {MAX_DEPTH} levels deep.")
    try:
        decoded = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise too_deep from None
    except UnicodeDecodeError:
        raise BadBody("The request body is not valid UTF-8 text.") from None
    except BadBody:
        raise
    except ValueError:  # not JSON, or a number of thousands of digits
        raise BadBody("The request body is not valid JSON.") from None
    if nesting_depth(decoded) > MAX_DEPTH:
        raise too_deep
    try:
        # "\ud800" parses, yet no database or password hash takes an unpaired surrogate.
        json.dumps(decoded, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadBody("The request body is not valid UTF-8 text.") from None
    return decoded


def _step(target: Any, key: str, path: str) -> tuple[Any, Any]:
    """The container `key` names inside `target`, and the key itself as the container reads it."""
    if isinstance(target, dict) and key in target:
        return target, key
    if isinstance(target, list) and key.isascii() and key.isdigit() and int(key) < len(target):
        return target, int(key)
    raise BadBody(f"The multipart map's path '{shown(path)}' names nothing in the operations.")


def place_files(operations: Any, files_map: Any, files: Mapping[str, Any]) -> Any:
    """The operations with every file put where the map says (the GraphQL multipart request spec): the map is
    an object of form field names to lists of dotted paths, each ending at a null placeholder."""
    if not isinstance(operations, dict | list):
        raise BadBody("The multipart operations are a JSON object, or a list of them.")
    if not isinstance(files_map, dict):
        raise BadBody("The multipart map is a JSON object of file field names to lists of paths.")
    placed = copy.deepcopy(operations)
    for name, paths in files_map.items():
        if name not in files:
            raise BadBody(f"The multipart map names a file '{shown(name)}' that the request does not carry.")
        if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
            raise BadBody(
                f"The multipart map gives file '{shown(name)}' a list of paths, such as [\"variables.file\"]."
            )
        for path in paths:
            *parents, last = path.split(".")
            target = placed
            for key in parents:
                container, index = _step(target, key, path)
                target = container[index]
            container, index = _step(target, last, path)
            if container[index] is not None:
                raise BadBody(f"The multipart map's path '{shown(path)}' does not end at a null placeholder.")
            container[index] = files[name]
    return placed
