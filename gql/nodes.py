"""Relay's object identification: `node(id)` and `nodes(ids)` find any User, SchoolClass, ImportJob,
AuditEvent or ApiToken by its id alone, so normalising caches (Relay, Apollo) can refetch what they hold.

An id is looked for only in the caller's school (row-level security, and the statement names the school),
and only among the types the caller may read by their own fields (tenants.policies decides, as for
`users`, `importJob`, `auditEvents` and `apiTokens`); anything else is null, as for an id that exists
nowhere. The fields of the object found keep their own permission classes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import strawberry

from db import models, nodes
from db.errors import ErrorCode
from gql.api_tokens import ApiToken
from gql.audit import AuditEvent
from gql.context import Info
from gql.errors import client_error
from gql.ids import Node
from gql.imports import ImportJob
from gql.permissions import AnyCaller
from gql.roster import SchoolClass, User
from tenants import policies
from tenants.callers import Caller, Person

MAX_NODES = 100

# Who may find each type by id: the policy of the type's own query fields.
_READERS: dict[type[nodes.Row], Callable[[Caller | None], object]] = {
    models.User: policies.require_roster_reader,
    models.SchoolClass: policies.require_roster_reader,
    models.ImportJob: policies.require_admin,
    models.AuditEvent: policies.require_admin,
    models.ApiToken: policies.require_admin,
}


def _wrap(row: nodes.Row) -> Node:
    match row:
        case models.User():
            return User.from_row(row)
        case models.SchoolClass():
            return SchoolClass.from_row(row)
        case models.ImportJob():
            return ImportJob.from_row(row)
        case models.AuditEvent():
            return AuditEvent.from_row(row)
        case models.ApiToken():
            return ApiToken.from_row(row)


def _parsed(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def _find(info: Info, ids: list[str]) -> list[Node | None]:
    caller = info.context.signed_in()
    wanted = [_parsed(value) for value in ids]
    tables = [table for table in nodes.TABLES if policies.allows(_READERS[table], caller)]
    found: dict[uuid.UUID, nodes.Row] = {}
    if isinstance(caller, Person) and models.User not in tables:
        # Anyone may read themselves (as `me`), so a client can refetch the User it was given there.
        tables.insert(0, models.User)
    async with info.context.scope() as session:
        found = await nodes.rows_by_id(
            session, school_id=caller.school_id, ids=[id_ for id_ in wanted if id_], tables=tables
        )
    return [_visible(caller, found.get(id_)) if id_ else None for id_ in wanted]


def _visible(caller: Caller, row: nodes.Row | None) -> Node | None:
    if row is None:
        return None
    if policies.allows(_READERS[type(row)], caller):
        return _wrap(row)
    if isinstance(row, models.User) and isinstance(caller, Person) and row.id == caller.user_id:
        return _wrap(row)
    return None


@strawberry.type
class NodeQueries:
    @strawberry.field(
        permission_classes=[AnyCaller],
        description="The object with this id in your school, of any type that implements Node, or null "
        "when there is none you may read.",
    )
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        (found,) = await _find(info, [id])
        return found

    @strawberry.field(
        permission_classes=[AnyCaller],
        description=f"The objects with these ids (at most {MAX_NODES}), in the same order; null for each "
        "that `node` would not find.",
    )
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        if len(ids) > MAX_NODES:
            raise client_error(f"Ask for at most {MAX_NODES} ids at a time.", ErrorCode.TOO_MANY.value)
        return await _find(info, list(ids))
