"""Reading the users table: filters, every ordering, keyset paging, totalCount, and no N+1.

Every behaviour test runs on both read paths (`reader`): the compiled one and Strawberry's.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette

from db.engine import Database
from db.scope import school_scope
from tests.conftest import SchoolFixture, counting_statements, graphql, make_api_token

USERS = """
query ($filter: UserFilter, $orderBy: UserOrder, $first: Int, $after: String) {
  users(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id username firstName surname type isAdmin deletedAt
                           registrationClass { name } teachingClasses { name } } }
  }
}
"""
PEOPLE = [
    # username, first name, surname, type
    ("amy.b", "Amy", "Brown", "PUPIL"),
    ("ben.c", "ben", "Clarke", "PUPIL"),
    ("cara.b", "Cara", "brown", "PUPIL"),
    ("dev.p", "Dev", "Patel", "TEACHER"),
    ("eve.b", "Eve", "Brown", "PUPIL"),
    ("finn.o", "Finn", "O'Neill", "PUPIL"),
    ("gus.z", "Gus", "Zane", "TEACHER"),
    ("hana.c", "Hana", "clarke", "PUPIL"),
]


async def add_people(
    db: Database, school: SchoolFixture, people: list[tuple[str, str, str, str]]
) -> dict[str, str]:
    """Insert users with one shared hash (fast), plus classes P1 (registration) and Choir (teaching)."""
    ids: dict[str, str] = {}
    async with school_scope(db, school.id) as session:
        p1, choir = uuid.uuid4(), uuid.uuid4()
        await session.execute(
            text(
                "insert into classes (school_id, id, name, name_key, kind) values "
                "(:s, :p1, 'P1', 'p1', 'REGISTRATION'), "
                "(:s, :choir, 'Choir', 'choir', 'TEACHING')"
            ),
            {"s": school.id, "p1": p1, "choir": choir},
        )
        for username, first, surname, kind in people:
            user_id = uuid.uuid4()
            ids[username] = str(user_id)
            await session.execute(
                text(
                    "insert into users (school_id, id, username, first_name, surname, type, password_hash) "
                    "values (:s, :id, :u, :f, :n, :t, 'x')"
                ),
                {"s": school.id, "id": user_id, "u": username, "f": first, "n": surname, "t": kind},
            )
            if kind == "PUPIL":
                await session.execute(
                    text(
                        "insert into class_memberships (school_id, class_id, user_id, kind) "
                        "values (:s, :c, :u, 'REGISTRATION'), (:s, :choir, :u, 'TEACHING')"
                    ),
                    {"s": school.id, "c": p1, "choir": choir, "u": user_id},
                )
        ids["P1"], ids["Choir"] = str(p1), str(choir)
    return ids


async def read_all(http: httpx.AsyncClient, token: str, **variables: Any) -> list[dict[str, Any]]:
    """Every page, following endCursor, two users at a time."""
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        body = await graphql(http, USERS, {**variables, "first": 2, "after": after}, token=token)
        connection = body["data"]["users"]
        nodes += [edge["node"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            return nodes
        after = connection["pageInfo"]["endCursor"]


@pytest.fixture
async def people(db: Database, school: SchoolFixture) -> dict[str, str]:
    return await add_people(db, school, PEOPLE)


def expected(key: Any, descending: bool = False, rows: list[tuple[str, str, str, str]] = PEOPLE) -> list[str]:
    everyone = [*rows, ("admin", "", "", "TEACHER")]
    return [row[0] for row in sorted(everyone, key=key, reverse=descending)]


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize(
    "field,key",
    [
        ("USERNAME", lambda r: r[0].lower()),
        ("FIRST_NAME", lambda r: (r[1].lower(), r[2].lower())),
        ("SURNAME", lambda r: (r[2].lower(), r[1].lower())),
        ("TYPE", lambda r: (r[3], r[2].lower(), r[1].lower())),
    ],
)
async def test_every_ordering_pages_through_everyone_once_in_order(
    reader: httpx.AsyncClient,
    school: SchoolFixture,
    people: dict[str, str],
    field: str,
    key: Any,
    descending: bool,
) -> None:
    nodes = await read_all(reader, school.admin_token, orderBy={"field": field, "descending": descending})
    usernames = [node["username"] for node in nodes]
    assert sorted(usernames) == sorted(expected(lambda r: r[0]))
    # Ties are broken by the names, then by id: compare the sort keys; ids must be in order within each tie.
    assert [
        key(next(r for r in [*PEOPLE, ("admin", "", "", "TEACHER")] if r[0] == u)) for u in usernames
    ] == [key(r) for r in sorted([*PEOPLE, ("admin", "", "", "TEACHER")], key=key, reverse=descending)]
    for a, b in itertools.pairwise(nodes):
        row_a = next(r for r in [*PEOPLE, ("admin", "", "", "TEACHER")] if r[0] == a["username"])
        row_b = next(r for r in [*PEOPLE, ("admin", "", "", "TEACHER")] if r[0] == b["username"])
        if key(row_a) == key(row_b):
            assert (a["id"] < b["id"]) != descending


async def test_creation_time_ordering(
    reader: httpx.AsyncClient, school: SchoolFixture, people: dict[str, str]
) -> None:
    nodes = await read_all(reader, school.admin_token, orderBy={"field": "CREATED_AT"})
    assert nodes[0]["username"] == "admin"
    newest_first = await read_all(
        reader, school.admin_token, orderBy={"field": "CREATED_AT", "descending": True}
    )
    assert [n["id"] for n in newest_first] == [n["id"] for n in reversed(nodes)]


async def test_filters(
    reader: httpx.AsyncClient, db: Database, school: SchoolFixture, people: dict[str, str]
) -> None:
    async def usernames(**filter: Any) -> list[str]:
        body = await graphql(
            reader, USERS, {"filter": filter, "orderBy": {"field": "USERNAME"}}, token=school.admin_token
        )
        assert body["data"]["users"]["totalCount"] == len(body["data"]["users"]["edges"])
        return [edge["node"]["username"] for edge in body["data"]["users"]["edges"]]

    assert await usernames(search="BROWN") == ["amy.b", "cara.b", "eve.b"]
    assert await usernames(search="an") == ["gus.z", "hana.c"]
    assert await usernames(search="%") == []
    assert await usernames(search="o'n") == ["finn.o"]
    assert await usernames(type="TEACHER") == ["admin", "dev.p", "gus.z"]
    assert await usernames(classId=people["P1"], type="PUPIL") == [
        "amy.b",
        "ben.c",
        "cara.b",
        "eve.b",
        "finn.o",
        "hana.c",
    ]
    async with school_scope(db, school.id) as session:
        await session.execute(text("update users set deleted_at = now() where username = 'ben.c'"))
    assert "ben.c" not in await usernames()
    assert await usernames(status="DELETED") == ["ben.c"]
    assert len(await usernames(status="ALL")) == len(PEOPLE) + 1


async def test_a_user_shows_its_classes(
    reader: httpx.AsyncClient, school: SchoolFixture, people: dict[str, str]
) -> None:
    body = await graphql(
        reader,
        "query ($id: ID!) { user(id: $id) { username registrationClass { name kind } "
        "teachingClasses { name kind } } }",
        {"id": people["amy.b"]},
        token=school.admin_token,
    )
    assert body["data"]["user"] == {
        "username": "amy.b",
        "registrationClass": {"name": "P1", "kind": "REGISTRATION"},
        "teachingClasses": [{"name": "Choir", "kind": "TEACHING"}],
    }
    nobody = await graphql(reader, '{ user(id: "nope") { id } }', token=school.admin_token)
    assert nobody["data"]["user"] is None


async def test_page_size_is_capped_and_cursors_are_checked(
    reader: httpx.AsyncClient, school: SchoolFixture
) -> None:
    for variables in ({"first": 501}, {"first": -1}, {"after": "bm90LWEtY3Vyc29y"}, {"after": "!!"}):
        body = await graphql(reader, USERS, variables, token=school.admin_token)
        assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST", body
    # No rows, only the count.
    body = await graphql(reader, USERS, {"first": 0}, token=school.admin_token)
    assert body["data"]["users"]["edges"] == [] and body["data"]["users"]["totalCount"] == 1


async def test_an_api_token_reads_the_roster(
    reader: httpx.AsyncClient, db: Database, school: SchoolFixture, people: dict[str, str]
) -> None:
    token = await make_api_token(db, school)
    nodes = await read_all(reader, token, orderBy={"field": "USERNAME"})
    assert len(nodes) == len(PEOPLE) + 1


async def test_a_page_of_100_users_with_classes_costs_a_constant_number_of_statements(
    strawberry_http: httpx.AsyncClient, strawberry_app: Starlette, db: Database, school: SchoolFixture
) -> None:
    # On the Strawberry path: the compiled path answers in one statement whatever the resolvers do.
    many = [(f"pupil{i:03}", f"First{i}", f"Surname{i}", "PUPIL") for i in range(200)]
    await add_people(db, school, many)
    counts = []
    for first in (10, 100):
        with counting_statements(strawberry_app.state.db.engine) as statements:
            body = await graphql(strawberry_http, USERS, {"first": first}, token=school.admin_token)
        assert len(body["data"]["users"]["edges"]) == first
        assert body["data"]["users"]["edges"][-1]["node"]["registrationClass"] == {"name": "P1"}
        counts.append(len(statements))
    assert counts[0] == counts[1]
    assert counts[1] <= 12
