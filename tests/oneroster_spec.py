"""The OneRoster 1.2 rostering OpenAPI description (tests/data/oneroster-1.2-rostering.openapi.yml, Apache-2.0,
1EdTech; its LICENSE and NOTICES beside it), as the tests read it, and a validator of answers against it.

The file is vendored unmodified. Three of its properties are declared `type: object` where the OneRoster 1.2
information model (and every consumer) has an array: a user's `roles`, a class's `terms` and an academic
session's `children`. `CORRECTIONS` puts arrays there when the file is loaded, and nothing else changes. The
description has no nested paths (`classes/{id}/students`, ...): each is added with the response of the
collection it lists (`students`), so its answers are checked against the same schema.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

SPEC = Path(__file__).parent / "data" / "oneroster-1.2-rostering.openapi.yml"
BASE = "/ims/oneroster/rostering/v1p2"
GUID_REF = {
    "type": "object",
    "properties": {"href": {"type": "string"}, "sourcedId": {"type": "string"}, "type": {"type": "string"}},
    "required": ["href", "sourcedId", "type"],
}
CORRECTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("user", "roles"): {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "properties": {
                "roleType": {"type": "string", "enum": ["primary", "secondary"]},
                "role": {"type": "string"},
                "org": GUID_REF,
            },
            "required": ["roleType", "role", "org"],
        },
    },
    ("class", "terms"): {"type": "array", "minItems": 1, "items": GUID_REF},
    ("academicSession", "children"): {"type": "array", "items": GUID_REF},
}
# The nested paths this server answers: parent collection, child, and the collection whose answer it has.
NESTED = [
    ("schools", "classes", "classes"),
    ("schools", "students", "students"),
    ("schools", "teachers", "teachers"),
    ("schools", "enrollments", "enrollments"),
    ("classes", "students", "students"),
    ("classes", "teachers", "teachers"),
    ("teachers", "classes", "classes"),
    ("students", "classes", "classes"),
    ("users", "classes", "classes"),
    ("terms", "classes", "classes"),
    ("terms", "gradingPeriods", "gradingPeriods"),
    ("courses", "classes", "classes"),
]
SERVED = (
    "orgs",
    "schools",
    "academicSessions",
    "terms",
    "gradingPeriods",
    "courses",
    "classes",
    "users",
    "students",
    "teachers",
    "enrollments",
)


@cache
def spec() -> dict[str, Any]:
    """The description with the corrections and the nested paths, and only the paths this server serves."""
    # YAML reads the examples in descriptions as dates; JSON keeps them as the text they are.
    loaded: dict[str, Any] = json.loads(json.dumps(yaml.safe_load(SPEC.read_text()), default=str))
    schemas = loaded["components"]["schemas"]
    for (schema, prop), replacement in CORRECTIONS.items():
        assert schemas[schema]["properties"][prop]["type"] == "object", (schema, prop)
        schemas[schema]["properties"][prop] = replacement
    paths = loaded["paths"]
    for parent, child, listed in NESTED:
        operation = copy.deepcopy(paths[f"{BASE}/{listed}"])
        operation["get"]["summary"] = f"get{child}For{parent}"
        operation["get"]["parameters"].append(
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        )
        paths[f"{BASE}/{parent}/{{id}}/{child}"] = operation
    served = {f"{BASE}/{name}" for name in SERVED} | {f"{BASE}/{name}/{{id}}" for name in SERVED}
    served |= {f"{BASE}/{parent}/{{id}}/{child}" for parent, child, _ in NESTED}
    loaded["paths"] = {path: item for path, item in paths.items() if path in served}
    return loaded


def _inline(node: Any, schemas: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(schemas[node["$ref"].rsplit("/", 1)[1]], schemas)
        return {key: _inline(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, schemas) for value in node]
    return node


@cache
def _validator(path: str) -> Any:
    described = spec()
    schema = described["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    inlined = _inline(schema, described["components"]["schemas"])
    # Every key the description names is required to be present at the top, as the server always sends it.
    inlined = {
        **inlined,
        "type": "object",
        "required": list(inlined["properties"]),
        "additionalProperties": False,
    }
    return jsonschema_rs.Draft7Validator(inlined, validate_formats=True)


def template_of(url_path: str) -> str:
    """The description's path for a request path: /classes/abc/students -> /classes/{id}/students."""
    parts = url_path.removeprefix(BASE).strip("/").split("/")
    if len(parts) >= 2:
        parts[1] = "{id}"
    return BASE + "/" + "/".join(parts)


def violations(url_path: str, body: Any) -> list[str]:
    """Where a 200 answer breaks the description (nothing when it conforms)."""
    return [
        f"{error.instance_path}: {error.message}"
        for error in _validator(template_of(url_path)).iter_errors(body)
    ]
