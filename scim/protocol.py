"""SCIM 2.0 (RFC 7643, RFC 7644) as Rollcall speaks it: errors (and the domain's errors as SCIM's), request
bodies, the attributes of a resource type, and versions. PATCH is in scim/patch.py, filters and paging in
scim/query.py, the User and Group resources in scim/users.py and scim/groups.py (what a provider may do to
users and classes is the domain's: db/provisioning/); HTTP is in scim/routes.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from db.errors import DomainError, ErrorCode
from db.text import storable

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


# The one mapping of the domain's errors to SCIM's: any code not here is a 400 with "invalidValue" (the request
# asks for something the domain refuses, such as a password too weak or a name too long).
_STATUS: dict[ErrorCode, tuple[int, str | None]] = {
    ErrorCode.USERNAME_TAKEN: (409, "uniqueness"),
    ErrorCode.EMAIL_TAKEN: (409, "uniqueness"),
    ErrorCode.EXTERNAL_ID_TAKEN: (409, "uniqueness"),
    ErrorCode.CLASS_NAME_TAKEN: (409, "uniqueness"),
    ErrorCode.NOT_FOUND: (404, None),
    ErrorCode.VERSION_CONFLICT: (412, None),
    ErrorCode.CONCURRENT_CHANGE: (409, None),
    # Refused because of the resource's current state, which RFC 7644 files under "mutability".
    ErrorCode.LAST_ADMIN: (400, "mutability"),
    ErrorCode.USER_DELETED: (400, "mutability"),
    ErrorCode.CANNOT_DELETE_SELF: (400, "mutability"),
    ErrorCode.MANAGED_IN_ROLLCALL: (400, "mutability"),
    ErrorCode.MANAGED_BY_PROVIDER: (403, None),
}


def scim_error(error: DomainError) -> ScimError:
    """The SCIM answer to a business error of the domain (db/provisioning and what it shares with GraphQL)."""
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
    if schemas is not MISSING and (
        not isinstance(schemas, list) or schema.lower() not in {str(s).lower() for s in schemas}
    ):
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
    if external_id is not None and not storable(external_id):
        raise ScimError(400, "An externalId cannot contain a NUL character.", "invalidValue")
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
    return if_none_match is not None and (
        if_none_match.strip() == "*" or current.removeprefix("W/").strip('"') in _tags(if_none_match)
    )


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
                return urn, canonical_name(path[len(urn) + 1 :], self.complex[urn])
        if lower.startswith(self.core.lower() + ":"):
            path = path[len(self.core) + 1 :]
        elif lower.startswith("urn:"):
            return None, None
        name, _, sub = path.partition(".")
        everything = (*self.simple, *self.complex, *self.multi, *self.read_only)
        top = canonical_name(name, everything)
        if top is None:
            return None, None
        if not sub:
            return top, None
        return top, canonical_name(sub, (*self.complex.get(top, ()), *self.multi.get(top, ()))) or sub


def canonical_name(name: str, names: Sequence[str]) -> str | None:
    return next((known for known in names if known.lower() == name.lower()), None)
