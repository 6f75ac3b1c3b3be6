"""Who may call what: every query and mutation, tried as every kind of caller.

Adding a field to the schema without a row here fails `test_every_field_has_a_row`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import list_api_tokens
from db.engine import Database
from db.models import UserType
from gql.schema import build_schema
from tenants.scope import school_scope
from tests.conftest import SchoolFixture, graphql, make_api_token, make_school, make_user, sign_in_as

ANONYMOUS, PUPIL, TEACHER, ADMIN, API_TOKEN, OTHER_ADMIN = "anonymous", "pupil", "teacher", "admin", "api", "other"
ROLES = (ANONYMOUS, PUPIL, TEACHER, ADMIN, API_TOKEN, OTHER_ADMIN)
EVERYONE = frozenset(ROLES)
PEOPLE = frozenset({PUPIL, TEACHER, ADMIN, OTHER_ADMIN})
STAFF = frozenset({TEACHER, ADMIN, OTHER_ADMIN})
ADMINS = frozenset({ADMIN, OTHER_ADMIN})
ROSTER_READERS = STAFF | {API_TOKEN}


@dataclass(frozen=True)
class World:
    """School A with one caller of each kind, plus an admin of school B."""

    school: SchoolFixture
    pupil_id: uuid.UUID
    teacher_id: uuid.UUID
    other: SchoolFixture
    ids: dict[str, str]


@dataclass(frozen=True)
class Operation:
    allowed: frozenset[str]
    build: Callable[[World], tuple[str, dict[str, Any]]]


def op(allowed: frozenset[str], query: str, variables: Callable[[World], dict[str, Any]] | None = None) -> Operation:
    return Operation(allowed, lambda world: (query, variables(world) if variables else {}))


OPERATIONS: dict[str, Operation] = {
    # queries
    "school": op(PEOPLE, "{ school { id } }"),
    "me": op(EVERYONE, "{ me { id } }"),
    "apiTokens": op(ADMINS, "{ apiTokens { id } }"),
    "users": op(ROSTER_READERS, "{ users { totalCount edges { node { id registrationClass { id } } } } }"),
    "user": op(ROSTER_READERS, "query ($id: ID!) { user(id: $id) { id } }", lambda world: {"id": world.ids["pupil"]}),
    # mutations
    "login": op(EVERYONE, 'mutation { login(school: "x", username: "y", password: "z") { errors { code } } }'),
    "logout": op(PEOPLE, "mutation { logout { errors { code } } }"),
    "changeMyPassword": op(PEOPLE, 'mutation { changeMyPassword(currentPassword: "wrong", newPassword: "a", '
                                   'confirmPassword: "a") { errors { code } } }'),
    "createApiToken": op(ADMINS, 'mutation { createApiToken(name: "App", scopes: [ROSTER_READ]) '
                                 '{ errors { code } } }'),
    "revokeApiToken": op(ADMINS, "mutation ($id: ID!) { revokeApiToken(id: $id) { errors { code } } }",
                         lambda world: {"id": world.ids["api_token"]}),
}


def test_every_field_has_a_row() -> None:
    schema = build_schema()
    fields = set(schema._schema.query_type.fields) | set(schema._schema.mutation_type.fields)  # type: ignore[union-attr]
    assert fields == set(OPERATIONS)


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine, db: Database) -> World:
    school, other = await make_school(owner_engine, db), await make_school(owner_engine, db)
    pupil = await make_user(db, school, type=UserType.PUPIL)
    teacher = await make_user(db, school, type=UserType.TEACHER)
    await make_api_token(db, school)
    async with school_scope(db, school.id) as session:
        token_id = str((await list_api_tokens(session, school_id=school.id))[0].id)
    return World(school=school, pupil_id=pupil, teacher_id=teacher, other=other,
                 ids={"api_token": token_id, "pupil": str(pupil)})


async def token_for(role: str, world: World, db: Database) -> str | None:
    match role:
        case "anonymous":
            return None
        case "pupil":
            return await sign_in_as(db, world.school, world.pupil_id)
        case "teacher":
            return await sign_in_as(db, world.school, world.teacher_id)
        case "admin":
            return await sign_in_as(db, world.school, world.school.admin_id)
        case "api":
            return await make_api_token(db, world.school)
        case "other":
            return await sign_in_as(db, world.other, world.other.admin_id)
    raise AssertionError(role)


@pytest.mark.parametrize("field", sorted(OPERATIONS))
@pytest.mark.parametrize("role", ROLES)
async def test_who_is_let_through(http: httpx.AsyncClient, db: Database, world: World, field: str,
                                  role: str) -> None:
    operation = OPERATIONS[field]
    query, variables = operation.build(world)
    body = await graphql(http, query, variables, token=await token_for(role, world, db))
    codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
    if role in operation.allowed:
        assert not {"UNAUTHENTICATED", "FORBIDDEN"} & set(codes), body
        assert body["data"][field] is not None or (field in {"me", "user"} and role == OTHER_ADMIN) \
            or field == "me", body
    else:
        assert codes == ["UNAUTHENTICATED" if role == ANONYMOUS else "FORBIDDEN"], body
