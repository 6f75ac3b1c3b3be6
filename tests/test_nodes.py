"""Relay object identification: `node(id)` and `nodes(ids)` over real HTTP, for every kind of caller, within
the caller's school only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import list_api_tokens
from db.audit import Actor
from db.classes import create_class
from db.engine import Database
from db.models import ClassKind, UserType
from db.scope import school_scope
from gql.nodes import MAX_NODES
from tests.conftest import SchoolFixture, graphql, make_api_token, make_school, make_user, sign_in_as
from tests.test_imports import preview

NODE = "query ($id: ID!) { node(id: $id) { __typename id } }"
NODES = "query ($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
KINDS = ("User", "SchoolClass", "ImportJob", "AuditEvent", "ApiToken")


@dataclass(frozen=True)
class Objects:
    school: SchoolFixture
    other: SchoolFixture
    pupil: uuid.UUID
    teacher: uuid.UUID
    ids: dict[str, str]  # one id of each kind, in `school`


@pytest.fixture(scope="module")
async def objects(owner_engine: AsyncEngine, db: Database, server_url: str) -> Objects:
    school, other = await make_school(owner_engine, db), await make_school(owner_engine, db)
    pupil = await make_user(db, school)
    teacher = await make_user(db, school, type=UserType.TEACHER)
    await make_api_token(db, school)
    async with school_scope(db, school.id) as session:
        token_id = (await list_api_tokens(session, school_id=school.id))[0].id
        school_class = await create_class(
            session,
            school_id=school.id,
            actor=Actor(id=school.admin_id, label="admin"),
            name="5C",
            kind=ClassKind.TEACHING,
        )
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        job = (await preview(http, school, b"username,first_name,surname,type\r\nzed,Zed,Zee,PUPIL\r\n"))[
            "job"
        ]
        events = await graphql(
            http, "{ auditEvents(first: 1) { edges { node { id } } } }", token=school.admin_token
        )
    return Objects(
        school=school,
        other=other,
        pupil=pupil,
        teacher=teacher,
        ids={
            "User": str(pupil),
            "SchoolClass": str(school_class.id),
            "ImportJob": job["id"],
            "AuditEvent": events["data"]["auditEvents"]["edges"][0]["node"]["id"],
            "ApiToken": str(token_id),
        },
    )


async def found(http: httpx.AsyncClient, token: str, ids: list[str]) -> list[Any]:
    body = await graphql(http, NODES, {"ids": ids}, token=token)
    assert "errors" not in body, body
    answers: list[Any] = body["data"]["nodes"]
    singles = [(await graphql(http, NODE, {"id": id_}, token=token))["data"]["node"] for id_ in ids]
    assert singles == answers
    return answers


async def test_an_admin_finds_every_kind_by_id_alone(http: httpx.AsyncClient, objects: Objects) -> None:
    answers = await found(http, objects.school.admin_token, [objects.ids[kind] for kind in KINDS])
    assert answers == [{"__typename": kind, "id": objects.ids[kind]} for kind in KINDS]
    # The same fields as when each is read by its own query.
    body = await graphql(
        http,
        "query ($id: ID!) { node(id: $id) { ... on ImportJob { status total fileName } } }",
        {"id": objects.ids["ImportJob"]},
        token=objects.school.admin_token,
    )
    assert body["data"]["node"] == {"status": "PREVIEW", "total": 1, "fileName": "roster.csv"}


@pytest.mark.parametrize(
    ("who", "readable"),
    [
        ("teacher", {"User", "SchoolClass"}),
        ("api", {"User", "SchoolClass"}),
        ("pupil", set()),
        ("own pupil", {"User"}),
    ],
)
async def test_each_caller_finds_only_the_kinds_it_may_read(
    http: httpx.AsyncClient, db: Database, objects: Objects, who: str, readable: set[str]
) -> None:
    school = objects.school
    if who == "teacher":
        token = await sign_in_as(db, school, objects.teacher)
    elif who == "api":
        token = await make_api_token(db, school)
    elif who == "own pupil":
        token = await sign_in_as(db, school, objects.pupil)  # the User in `ids` is this pupil
    else:
        token = await sign_in_as(db, school, await make_user(db, school))
    answers = await found(http, token, [objects.ids[kind] for kind in KINDS])
    assert answers == [
        {"__typename": kind, "id": objects.ids[kind]} if kind in readable else None for kind in KINDS
    ]


async def test_another_schools_ids_are_null(http: httpx.AsyncClient, objects: Objects) -> None:
    answers = await found(http, objects.other.admin_token, [objects.ids[kind] for kind in KINDS])
    assert answers == [None] * len(KINDS)


async def test_unknown_and_malformed_ids_are_null_in_their_place(
    http: httpx.AsyncClient, objects: Objects
) -> None:
    ids = ["not-an-id", objects.ids["User"], str(uuid.uuid4()), objects.ids["User"]]
    answers = await found(http, objects.school.admin_token, ids)
    user = {"__typename": "User", "id": objects.ids["User"]}
    assert answers == [None, user, None, user]


async def test_field_permissions_still_apply_to_what_node_finds(
    http: httpx.AsyncClient, db: Database, objects: Objects
) -> None:
    pupil_token = await sign_in_as(db, objects.school, objects.pupil)
    body = await graphql(
        http,
        "query ($id: ID!) { node(id: $id) { ... on User { username email } } }",
        {"id": str(objects.pupil)},
        token=pupil_token,
    )
    assert [error["extensions"]["code"] for error in body["errors"]] == ["FORBIDDEN"]
    assert body["errors"][0]["path"] == ["node", "email"]


async def test_too_many_ids_and_too_costly_lists_are_refused(
    http: httpx.AsyncClient, objects: Objects
) -> None:
    token = objects.school.admin_token
    body = await graphql(http, NODES, {"ids": [str(uuid.uuid4())] * (MAX_NODES + 1)}, token=token)
    assert body["errors"][0]["extensions"]["code"] == "TOO_MANY" and body["data"] is None
    # Each id counts as one object, and what is below it as many times: 100 classes of 500 members each.
    costly = "query ($ids: [ID!]!) { nodes(ids: $ids) { ... on SchoolClass { members(first: 500) { totalCount } } } }"
    body = await graphql(http, costly, {"ids": [objects.ids["SchoolClass"]] * MAX_NODES}, token=token)
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY", body
    body = await graphql(http, costly, {"ids": [objects.ids["SchoolClass"]] * 2}, token=token)
    assert "errors" not in body, body


async def test_nobody_signed_in_is_refused(http: httpx.AsyncClient, objects: Objects) -> None:
    body = await graphql(http, NODE, {"id": objects.ids["User"]})
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAUTHENTICATED"]
