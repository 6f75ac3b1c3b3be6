"""OneRoster 1.2's resources over the domain's flat rows (db/rostering.py): each field's JSON, what a filter or
sort may name, and what its values are compared as.

A field is one key of the resource's JSON. A scalar field is one column of the source; a link (GUIDRef:
`{href, sourcedId, type}`) is built from its `x.sourcedId` column; `terms`, `children`, `roles` and `userIds`
are arrays. What a filter may name are the scalar fields and the parts of links and arrays
(`class.sourcedId`, `roles.role`, `userIds.identifier`): its `paths`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Subquery, case, func, literal_column
from sqlalchemy.sql.elements import BindParameter

from db import rostering


class Kind(enum.Enum):
    """What a path's values are compared as."""

    STRING = "string"
    DATETIME = "datetime"
    DATE = "date"
    BOOLEAN = "boolean"


Json = ColumnElement[Any]
Columns = Callable[[str], ColumnElement[Any]]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    # The filterable paths this field holds, each the name of a source column, and its kind.
    paths: Mapping[str, Kind]
    # Builds the field's JSON from the source's columns and the base URL of links.
    json: Callable[[Columns, BindParameter[str]], Json]


def scalar(name: str, kind: Kind = Kind.STRING) -> Field:
    if kind == Kind.DATETIME:
        return Field(name, {name: kind}, lambda column, base: timestamp(column(name)))
    return Field(name, {name: kind}, lambda column, base: column(name))


def timestamp(moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """OneRoster's dateLastModified: UTC, to the millisecond (`2026-09-01T08:00:00.000Z`); filters compare at
    the same precision, so the latest value a consumer saw is never "after" itself."""
    return func.to_char(func.timezone("UTC", moment), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')


def _guid_ref(sourced_id: ColumnElement[Any], target: str, collection: str, base: BindParameter[str]) -> Json:
    return case(
        (sourced_id.is_(None), None),
        else_=func.json_build_object(
            "href", base.concat(f"/{collection}/").concat(sourced_id), "sourcedId", sourced_id, "type", target
        ),
    )


def link(name: str, target: str, collection: str) -> Field:
    """A GUIDRef to one object."""
    path = f"{name}.sourcedId"
    return Field(
        name, {path: Kind.STRING}, lambda column, base: _guid_ref(column(path), target, collection, base)
    )


def links(name: str, target: str, collection: str) -> Field:
    """An array of GUIDRefs (here of at most one: a class's term, a session's child)."""
    path = f"{name}.sourcedId"

    def json(column: Columns, base: BindParameter[str]) -> Json:
        return _array_of_one(column(path), _guid_ref(column(path), target, collection, base))

    return Field(name, {path: Kind.STRING}, json)


_EMPTY: ColumnElement[Any] = literal_column("'[]'::json")


def _array_of_one(present: ColumnElement[Any], item: Json) -> Json:
    return case((present.is_(None), _EMPTY), else_=func.json_build_array(item))


def _roles() -> Field:
    paths = {"roles.roleType": Kind.STRING, "roles.role": Kind.STRING, "roles.org.sourcedId": Kind.STRING}

    def json(column: Columns, base: BindParameter[str]) -> Json:
        return func.json_build_array(
            func.json_build_object(
                "roleType",
                column("roles.roleType"),
                "role",
                column("roles.role"),
                "org",
                _guid_ref(column("roles.org.sourcedId"), "org", "orgs", base),
            )
        )

    return Field("roles", paths, json)


def _user_ids() -> Field:
    paths = {"userIds.type": Kind.STRING, "userIds.identifier": Kind.STRING}

    def json(column: Columns, base: BindParameter[str]) -> Json:
        identifier = column("userIds.identifier")
        return _array_of_one(
            identifier, func.json_build_object("type", column("userIds.type"), "identifier", identifier)
        )

    return Field("userIds", paths, json)


@dataclass(frozen=True, slots=True)
class Resource:
    """One kind of OneRoster object: its collection's key and path, its one object's key, its fields."""

    collection: str  # the path of a list: "students"
    key: str  # the JSON key of a list: "users"
    singular: str  # the JSON key of one: "user"
    source: Callable[[rostering.Roster], rostering.Source]
    fields: tuple[Field, ...]
    # A column that orders exactly as `sourcedId` does and is cheaper (the row's own uuid), if there is one.
    sourced_id_order: str | None = None
    by_name: dict[str, Field] = field(init=False, repr=False, compare=False)
    paths: dict[str, Kind] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})
        object.__setattr__(self, "paths", {path: kind for f in self.fields for path, kind in f.paths.items()})

    def document(self, src: Subquery, base: BindParameter[str], names: tuple[str, ...] | None) -> Json:
        """The JSON of one row; only `names` when given (a projection)."""

        def column(name: str) -> ColumnElement[Any]:
            return src.c[name]

        chosen = self.fields if names is None else tuple(self.by_name[name] for name in names)
        arguments: list[Any] = []
        for found in chosen:
            arguments += [found.name, found.json(column, base)]
        return func.json_strip_nulls(func.json_build_object(*arguments))


BASE = (
    scalar("sourcedId"),
    scalar("status"),
    scalar("dateLastModified", Kind.DATETIME),
)

ORGS = Resource(
    "orgs",
    "orgs",
    "org",
    rostering.orgs,
    (*BASE, scalar("name"), scalar("type"), scalar("identifier")),
)
SCHOOLS = Resource("schools", "orgs", "org", rostering.orgs, ORGS.fields)

_SESSION_FIELDS = (
    *BASE,
    scalar("title"),
    scalar("type"),
    scalar("startDate", Kind.DATE),
    scalar("endDate", Kind.DATE),
    link("parent", "academicSession", "academicSessions"),
    links("children", "academicSession", "academicSessions"),
    scalar("schoolYear"),
)
ACADEMIC_SESSIONS = Resource(
    "academicSessions", "academicSessions", "academicSession", rostering.academic_sessions, _SESSION_FIELDS
)
TERMS = Resource("terms", "academicSessions", "academicSession", rostering.academic_sessions, _SESSION_FIELDS)
GRADING_PERIODS = Resource(
    "gradingPeriods", "academicSessions", "academicSession", rostering.academic_sessions, _SESSION_FIELDS
)

COURSES = Resource(
    "courses",
    "courses",
    "course",
    rostering.courses,
    (
        *BASE,
        scalar("title"),
        scalar("courseCode"),
        link("schoolYear", "academicSession", "academicSessions"),
        link("org", "org", "orgs"),
    ),
)

CLASSES = Resource(
    "classes",
    "classes",
    "class",
    rostering.classes,
    (
        *BASE,
        scalar("title"),
        scalar("classCode"),
        scalar("classType"),
        link("course", "course", "courses"),
        link("school", "org", "schools"),
        links("terms", "academicSession", "terms"),
    ),
    sourced_id_order="_id",
)

_USER_FIELDS = (
    *BASE,
    scalar("username"),
    _user_ids(),
    scalar("enabledUser", Kind.BOOLEAN),
    scalar("givenName"),
    scalar("familyName"),
    _roles(),
    link("primaryOrg", "org", "orgs"),
    scalar("identifier"),
    scalar("email"),
)
USERS = Resource("users", "users", "user", rostering.users, _USER_FIELDS, sourced_id_order="_id")
STUDENTS = Resource("students", "users", "user", rostering.users, _USER_FIELDS, sourced_id_order="_id")
TEACHERS = Resource("teachers", "users", "user", rostering.users, _USER_FIELDS, sourced_id_order="_id")

ENROLLMENTS = Resource(
    "enrollments",
    "enrollments",
    "enrollment",
    rostering.enrollments,
    (
        *BASE,
        link("user", "user", "users"),
        link("class", "class", "classes"),
        link("school", "org", "schools"),
        scalar("role"),
        scalar("primary", Kind.BOOLEAN),
    ),
)

RESOURCES = (
    ORGS,
    SCHOOLS,
    ACADEMIC_SESSIONS,
    TERMS,
    GRADING_PERIODS,
    COURSES,
    CLASSES,
    USERS,
    STUDENTS,
    TEACHERS,
    ENROLLMENTS,
)
