"""The compiled read path answers exactly as Strawberry does, in one SQL statement, for the same callers only.

Every query here is sent twice: to the app under test (compiled reads on) and to a second app over the same
database with them off. The answers must be the same JSON; and the compiled one must have been one statement
after the school was bound (or, for what the compiled path does not answer, none).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLEnumValue,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLSchema,
    GraphQLString,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.asgi import GraphQL

from db.api_tokens import ApiScope
from db.engine import Database
from db.models import Provider
from db.scope import school_scope
from gql.compiled import PLAN_CACHE_SIZE, CompiledReads
from gql.compiled_sql import MARK
from gql.schema import build_schema
from tests.conftest import (
    POLICY,
    SchoolFixture,
    counting_statements,
    graphql,
    make_api_token,
    make_school,
    sign_in_as,
)

FIELDS = """id username firstName surname type isAdmin mustChangePassword createdAt updatedAt deletedAt version
            externalId __typename registrationClass { id name kind __typename } teachingClasses { id name kind }"""
USERS = f"""
query Users($filter: UserFilter, $orderBy: UserOrder, $first: Int, $after: String) {{
  users(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {{
    __typename totalCount
    pageInfo {{ hasNextPage endCursor __typename }}
    edges {{ __typename cursor node {{ {FIELDS} }} }}
  }}
}}
"""
ROSTER_PAGE = """{ users(first: 50, orderBy: {field: SURNAME}) { totalCount
  edges { node { id username firstName surname type registrationClass { name } } } } }"""
CLASSES = """query ($kind: ClassKind, $type: UserType, $first: Int) {
  classes(kind: $kind) { id name kind memberCount __typename
    members(type: $type, first: $first) { totalCount pageInfo { hasNextPage endCursor }
      edges { cursor node { username registrationClass { name memberCount } } } } } }"""

# username, first name, surname, type: unicode where Python's lower() is not PostgreSQL's, JSON's own
# characters, ties, and empty names.
PEOPLE = [
    ("amy.b", "Amy", "Brown", "PUPIL"),
    ("ben.c", "ben", "brown", "PUPIL"),
    ("cara.b", "Cara", "BROWN", "PUPIL"),
    ("dev.p", "Dev", "Patel", "TEACHER"),
    ("odysseus", "Ὀδυσσεύς", "ΟΔΥΣΣΕΥΣ", "PUPIL"),
    ("ipek", "İpek", "Işık", "PUPIL"),
    ("aero", "Ærøn", "Ærøskøbing", "TEACHER"),
    ("finn.o", "Finn", "O'Neill", "PUPIL"),
    ("quote", 'Say "hi"', "Back\\slash", "PUPIL"),
    ("tab", "Tab\tby", "Line\nfeed", "PUPIL"),
    ("emoji", "😀 Joy", "Smile 😀", "PUPIL"),
    ("zed", "Zed", "", "PUPIL"),
    ("dora", "Dora", "Ülker", "PUPIL"),
    ("eve", "Eve", "ñandú", "PUPIL"),
    ("del", "Del", "\u007fdel", "PUPIL"),
]


@dataclasses.dataclass
class Both:
    """Sends a query to both apps and compares the answers."""

    fast: httpx.AsyncClient
    plain: httpx.AsyncClient
    engine: AsyncEngine

    async def ask(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None, compiled: bool = True
    ) -> dict[str, Any]:
        with counting_statements(self.engine) as statements:
            fast = await graphql(self.fast, query, variables, token=token)
        plain = await graphql(self.plain, query, variables, token=token)
        assert without_request_ids(fast) == without_request_ids(plain)
        # rollcall_caller finds the caller and binds their school, in one statement.
        bound = [
            i
            for i, s in enumerate(statements)
            if "set_config('app.school_id'" in s or "rollcall_caller(" in s
        ]
        after_binding = statements[bound[-1] + 1 :] if bound else statements
        if compiled:
            assert len(after_binding) == 1 and after_binding[0].startswith(MARK), statements
            assert len(statements) == 2, statements  # the caller, then the read: nothing else
        else:
            assert not any(MARK in s for s in statements), statements
        return fast


def without_request_ids(body: dict[str, Any]) -> dict[str, Any]:
    """Masked errors name the request they happened in; every request has its own."""
    errors = [
        {**error, "extensions": {k: v for k, v in error.get("extensions", {}).items() if k != "requestId"}}
        for error in body.get("errors", [])
    ]
    return {**body, "errors": errors} if errors else body


ACTIVE_PUPILS = {p[0] for p in PEOPLE if p[3] == "PUPIL" and p[0] != "zed"}
# What each ordering gives, as groups of equal sort keys (ties come in id order, which the test does not
# know), over the people whose keys sort alike in any collation (the test database takes the machine's).
ORDERS: dict[str, list[set[str]]] = {
    "USERNAME": [
        {u}
        for u in (
            "admin",
            "aero",
            "amy.b",
            "ben.c",
            "cara.b",
            "del",
            "dev.p",
            "dora",
            "emoji",
            "eve",
            "finn.o",
            "ipek",
            "odysseus",
            "quote",
            "tab",
        )
    ],
    "FIRST_NAME": [
        {u}
        for u in (
            "admin",
            "amy.b",
            "ben.c",
            "cara.b",
            "del",
            "dev.p",
            "dora",
            "eve",
            "finn.o",
            "quote",
            "tab",
            "odysseus",
        )
    ],
    "SURNAME": [{"admin"}, {"amy.b", "ben.c", "cara.b"}, {"finn.o"}, {"dev.p"}, {"emoji"}, {"odysseus"}],
    "TYPE": [ACTIVE_PUPILS, {"admin", "aero", "dev.p"}],
    # Three back-dated, then the admin (made with the school), then the roster (added in one transaction).
    "CREATED_AT": [
        {"amy.b", "ben.c", "cara.b"},
        {"admin"},
        {p[0] for p in PEOPLE} - {"amy.b", "ben.c", "cara.b", "zed"},
    ],
}


def assert_in_order(usernames: list[str], groups: list[set[str]], *, descending: bool = False) -> None:
    """`usernames`, narrowed to those in `groups`, come group after group (reversed when descending)."""
    present = [group & set(usernames) for group in groups if group & set(usernames)]
    known = set().union(*present)
    seen = [username for username in usernames if username in known]
    at = 0
    for group in reversed(present) if descending else present:
        assert set(seen[at : at + len(group)]) == group, seen
        at += len(group)
    assert at == len(seen), seen


@pytest.fixture
def both(http: httpx.AsyncClient, strawberry_http: httpx.AsyncClient, app: Starlette) -> Both:
    return Both(http, strawberry_http, app.state.db.engine)


async def add_roster(
    db: Database, school: SchoolFixture, people: list[tuple[str, str, str, str]]
) -> dict[str, str]:
    """The people, two registration classes and two teaching classes, a deleted pupil, and a few odd values."""
    ids: dict[str, str] = {}
    async with school_scope(db, school.id) as session:
        classes = {name: uuid.uuid4() for name in ("P1", "P2", "Choir", "Art")}
        for name, class_id in classes.items():
            await session.execute(
                text(
                    "insert into classes (school_id, id, name, name_key, kind) "
                    "values (:s, :id, :n, lower(cast(:n as varchar)), :k)"
                ),
                {
                    "s": school.id,
                    "id": class_id,
                    "n": name,
                    "k": "REGISTRATION" if name.startswith("P") else "TEACHING",
                },
            )
            ids[name] = str(class_id)
        for i, (username, first, surname, kind) in enumerate(people):
            user_id = uuid.uuid4()
            ids[username] = str(user_id)
            await session.execute(
                text(
                    "insert into users (school_id, id, username, first_name, surname, type, password_hash, external_id) "
                    "values (:s, :id, :u, :f, :n, :t, 'x', :x)"
                ),
                {
                    "s": school.id,
                    "id": user_id,
                    "u": username,
                    "f": first,
                    "n": surname,
                    "t": kind,
                    "x": f"ext-{i}" if i % 3 == 0 else None,
                },
            )
            memberships = [("P1" if i % 2 else "P2", "REGISTRATION")] if kind == "PUPIL" and i % 5 else []
            memberships += [(name, "TEACHING") for name in ("Choir", "Art")[: i % 3]]
            for name, class_kind in memberships:
                await session.execute(
                    text(
                        "insert into class_memberships (school_id, class_id, user_id, kind) "
                        "values (:s, :c, :u, :k)"
                    ),
                    {"s": school.id, "c": classes[name], "u": user_id, "k": class_kind},
                )
        # Whole seconds (no microseconds), a deleted pupil, and one who must change their password.
        await session.execute(
            text(
                "update users set created_at = '2024-09-01 08:30:00+00' where username in "
                "('amy.b', 'ben.c', 'cara.b')"
            ),
            {},
        )
        await session.execute(text("update users set deleted_at = now() where username = 'zed'"))
        await session.execute(
            text("update users set must_change_password = true, version = 3 where username = 'finn.o'")
        )
    return ids


@pytest.fixture
async def roster(db: Database, school: SchoolFixture) -> dict[str, str]:
    return await add_roster(db, school, PEOPLE)


async def page_through(both: Both, token: str, variables: dict[str, Any], first: int = 4) -> list[str]:
    """Every page, following endCursor; each page compared on both paths."""
    usernames, after = [], None
    while True:
        body = await both.ask(USERS, {**variables, "first": first, "after": after}, token=token)
        connection = body["data"]["users"]
        usernames += [edge["node"]["username"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            return usernames
        after = connection["pageInfo"]["endCursor"]


async def test_the_roster_page_is_one_statement(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    body = await both.ask(ROSTER_PAGE, token=school.admin_token)
    assert body["data"]["users"]["totalCount"] == len(PEOPLE)  # the admin in, the deleted pupil out


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("field", ["USERNAME", "FIRST_NAME", "SURNAME", "TYPE", "CREATED_AT"])
async def test_every_ordering_pages_the_same_both_ways(
    both: Both, school: SchoolFixture, roster: dict[str, str], field: str, descending: bool
) -> None:
    usernames = await page_through(
        both, school.admin_token, {"orderBy": {"field": field, "descending": descending}}
    )
    assert sorted(usernames) == sorted(["admin", *(p[0] for p in PEOPLE if p[0] != "zed")])
    assert_in_order(usernames, ORDERS[field], descending=descending)


EVERYONE = {"admin", *(p[0] for p in PEOPLE)} - {"zed"}


@pytest.mark.parametrize(
    "filter, expected",
    [
        ({"search": "brown"}, {"amy.b", "ben.c", "cara.b"}),
        ({"search": "  ΣΣ "}, {"odysseus"}),
        ({"search": "%"}, set()),
        ({"search": "_"}, set()),
        ({"search": "\\"}, {"quote"}),
        ({"search": "   "}, EVERYONE),
        ({"search": "o'n"}, {"finn.o"}),
        ({"search": "😀"}, {"emoji"}),
        ({"type": "TEACHER"}, {"admin", "aero", "dev.p"}),
        ({"type": "PUPIL", "status": "ALL"}, ACTIVE_PUPILS | {"zed"}),
        ({"status": "DELETED"}, {"zed"}),
        ({"status": "ALL"}, EVERYONE | {"zed"}),
        ({"classId": "P1"}, {"ben.c", "eve", "finn.o", "tab"}),
        ({"classId": "Choir", "search": "a"}, {"cara.b", "eve", "quote"}),
        ({"classId": str(uuid.UUID(int=7))}, set()),
    ],
)
async def test_filters_answer_the_same_both_ways(
    both: Both, school: SchoolFixture, roster: dict[str, str], filter: dict[str, Any], expected: set[str]
) -> None:
    if "classId" in filter:
        filter = {**filter, "classId": roster.get(filter["classId"], filter["classId"])}
    order = {"field": "SURNAME", "descending": True}
    usernames = await page_through(both, school.admin_token, {"filter": filter, "orderBy": order})
    assert sorted(usernames) == sorted(expected)
    assert_in_order(usernames, ORDERS["SURNAME"], descending=True)


async def test_ties_page_one_at_a_time(both: Both, db: Database, school: SchoolFixture) -> None:
    await add_roster(db, school, [(f"twin{i}", "Sam", "Smith", "PUPIL") for i in range(7)])
    for field in ("SURNAME", "FIRST_NAME", "TYPE", "CREATED_AT"):
        assert len(await page_through(both, school.admin_token, {"orderBy": {"field": field}}, first=1)) == 8


async def test_aliases_literals_and_several_root_fields(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    query = """{
      teachers: users(filter: {type: TEACHER}, orderBy: {field: USERNAME, descending: true}, first: 2) {
        count: totalCount more: pageInfo { next: hasNextPage last: endCursor }
        rows: edges { at: cursor who: node { login: username name: firstName __typename
                                             reg: registrationClass { name } } } }
      pupils: users(filter: {type: PUPIL, search: "o"}) { totalCount edges { node { username } } }
      __typename
      everyone: users { totalCount }
      nothing: users(filter: {classId: "00000000-0000-0000-0000-000000000009"}) { totalCount edges { cursor }
                                                                                    pageInfo { endCursor } }
    }"""
    body = await both.ask(query, token=school.admin_token)
    assert body["data"]["__typename"] == "Query"
    rows = body["data"]["teachers"]["rows"]
    assert [row["who"]["login"] for row in rows] == ["dev.p", "aero"]
    assert body["data"]["teachers"]["count"] == 3 and body["data"]["teachers"]["more"]["next"] is True
    await both.ask(
        """{ users(orderBy: {field: FIRST_NAME, descending: true}, first: 5) {
                        edges { cursor node { username teachingClasses { name } } } } }""",
        token=school.admin_token,
    )
    assert body["data"]["nothing"] == {"totalCount": 0, "edges": [], "pageInfo": {"endCursor": None}}


async def test_variables_with_defaults(both: Both, school: SchoolFixture, roster: dict[str, str]) -> None:
    query = """query ($order: UserOrderField = FIRST_NAME, $size: Int = 4, $who: UserType) {
      users(orderBy: {field: $order}, first: $size, filter: {type: $who}) {
        totalCount edges { cursor node { username createdAt } } } }"""
    await both.ask(query, token=school.admin_token)
    await both.ask(query, {"order": "CREATED_AT", "who": "PUPIL"}, token=school.admin_token)
    await both.ask(query, {"size": None}, token=school.admin_token)


async def test_classes_with_their_members(both: Both, school: SchoolFixture, roster: dict[str, str]) -> None:
    body = await both.ask(CLASSES, token=school.admin_token)
    assert [c["name"] for c in body["data"]["classes"]] == ["P1", "P2", "Art", "Choir"]
    p1 = body["data"]["classes"][0]
    assert (p1["memberCount"], p1["members"]["totalCount"]) == (4, 4)
    members = [edge["node"]["username"] for edge in p1["members"]["edges"]]
    assert sorted(members) == ["ben.c", "eve", "finn.o", "tab"]
    assert [m for m in members if m != "eve"] == ["ben.c", "tab", "finn.o"]  # by surname
    await both.ask(CLASSES, {"kind": "TEACHING", "type": "PUPIL", "first": 1}, token=school.admin_token)
    await both.ask(
        """{ users(first: 8) { edges { node { teachingClasses { name memberCount
                        members(first: 2) { totalCount edges { node { username teachingClasses { name } } } } }
                      registrationClass { name members(type: PUPIL) { totalCount pageInfo { endCursor } } } } } } }""",
        token=school.admin_token,
    )


async def test_teaching_classes_asked_for_twice(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    body = await both.ask(
        """{ users(orderBy: {field: USERNAME}) { edges { node { username
                                 some: teachingClasses { name } again: teachingClasses { id kind __typename } } } } }""",
        token=school.admin_token,
    )
    assert any(len(edge["node"]["again"]) == 2 for edge in body["data"]["users"]["edges"])


async def test_a_body_the_view_refuses_is_refused_alike(both: Both, school: SchoolFixture) -> None:
    # An unpaired surrogate parses as JSON, yet no database takes it.
    body = (
        b'{"query": "query ($s: String) { users(filter: {search: $s}) { totalCount } }", '
        b'"variables": {"s": "\\ud800"}}'
    )
    headers = {"Authorization": f"Bearer {school.admin_token}", "Content-Type": "application/json"}
    fast, plain = [
        await client.post("/graphql", content=body, headers=headers) for client in (both.fast, both.plain)
    ]
    assert (fast.status_code, fast.text) == (plain.status_code, plain.text)
    assert fast.status_code == 400


async def test_an_empty_school(both: Both, owner_engine: AsyncEngine, db: Database) -> None:
    empty = await make_school(owner_engine, db)
    async with school_scope(db, empty.id) as session:
        await session.execute(text("update users set deleted_at = now()"))
    token = await make_api_token(db, empty)
    body = await both.ask(USERS, {"first": 5}, token=token)
    assert body["data"]["users"]["edges"] == []
    await both.ask(CLASSES, token=token)


async def test_what_it_does_not_answer_goes_to_strawberry(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    token = school.admin_token
    asked: list[tuple[str, dict[str, Any]]] = [
        ("{ users { ...Rows } } fragment Rows on UserConnection { totalCount }", {}),
        ("{ users { edges { node { ... on User { id } } } } }", {}),
        ("query ($no: Boolean!) { users { totalCount @skip(if: $no) } }", {"no": False}),
        ("{ users { totalCount totalCount } }", {}),
        ("{ school { name } users { totalCount } }", {}),
        ("{ __schema { queryType { name } } }", {}),
        ("query ($id: ID!) { user(id: $id) { username } }", {"id": roster["amy.b"]}),
        ('mutation { createClass(name: "", kind: TEACHING) { errors { code } } }', {}),
        ('{ schoolClass(id: "nope") { name } }', {}),
        ("{ users(first: 501) { totalCount } }", {}),
        ("{ users(first: 0) { totalCount } }", {}),
        ('{ users(after: "bm90LWEtY3Vyc29y") { totalCount } }', {}),
        ("query ($first: Int) { users(first: $first) { totalCount } }", {"first": "ten"}),
        ("{ users { nope } }", {}),
        ("{ users", {}),
    ]
    for query, variables in asked:
        await both.ask(query, variables, token=token, compiled=False)
    cursor = (await both.ask(USERS, {"first": 1, "orderBy": {"field": "USERNAME"}}, token=token))["data"][
        "users"
    ]["pageInfo"]["endCursor"]
    # A cursor from another ordering, where the types differ, is refused alike.
    await both.ask(USERS, {"after": cursor, "orderBy": {"field": "CREATED_AT"}}, token=token, compiled=False)


async def test_the_safety_limits_hold(both: Both, school: SchoolFixture) -> None:
    deep = (
        "{ users { edges { node { registrationClass { members { edges { node { registrationClass { members "
        "{ edges { node { id } } } } } } } } } } } }"
    )
    many_aliases = "{ " + " ".join(f"a{i}: users {{ totalCount }}" for i in range(16)) + " }"
    many_tokens = "{ users { " + "totalCount " * 2000 + "} }"
    for query in (deep, many_aliases, many_tokens):
        body = await both.ask(query, token=school.admin_token, compiled=False)
        assert body["errors"]


async def test_a_school_never_sees_another(
    both: Both, owner_engine: AsyncEngine, db: Database, school: SchoolFixture, roster: dict[str, str]
) -> None:
    other = await make_school(owner_engine, db)
    ours = await both.ask(USERS, {"first": 100}, token=school.admin_token)
    theirs = await both.ask(
        USERS, {"first": 100, "filter": {"classId": roster["P1"]}}, token=other.admin_token
    )
    assert theirs["data"]["users"]["totalCount"] == 0
    everyone = await both.ask(USERS, {"first": 100, "filter": {"status": "ALL"}}, token=other.admin_token)
    assert [e["node"]["username"] for e in everyone["data"]["users"]["edges"]] == ["admin"]
    assert everyone["data"]["users"]["edges"][0]["node"]["id"] == str(other.admin_id)
    assert len(ours["data"]["users"]["edges"]) == len(PEOPLE)
    classes = await both.ask(CLASSES, token=other.admin_token)
    assert classes["data"]["classes"] == []


async def test_only_roster_readers_get_the_compiled_answer(
    both: Both, owner_engine: AsyncEngine, db: Database, school: SchoolFixture, roster: dict[str, str]
) -> None:
    teacher = await sign_in_as(db, school, uuid.UUID(roster["dev.p"]))
    pupil = await sign_in_as(db, school, uuid.UUID(roster["amy.b"]))
    must_change = await sign_in_as(db, school, uuid.UUID(roster["aero"]))
    managed = await make_school(owner_engine, db, provider=Provider.C2K)
    async with school_scope(db, school.id) as session:
        await session.execute(text("update users set must_change_password = true where username = 'aero'"))
    readers = {
        "admin": school.admin_token,
        "teacher": teacher,
        "roster token": await make_api_token(db, school),
    }
    others: dict[str, str | None] = {
        "anonymous": None,
        "pupil": pupil,
        "must change password": must_change,
        "unknown": "rcs_nope",
        "provisioning token": await make_api_token(db, managed, [ApiScope.PROVISION]),
    }
    for reader in readers.values():
        body = await both.ask(ROSTER_PAGE, token=reader)
        assert body["data"]["users"]["totalCount"] == len(PEOPLE)
    for name, token in others.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with counting_statements(both.engine) as statements:
            fast = await both.fast.post("/graphql", json={"query": ROSTER_PAGE}, headers=headers)
        plain = await both.plain.post("/graphql", json={"query": ROSTER_PAGE}, headers=headers)
        assert (fast.status_code, fast.text) == (plain.status_code, plain.text), name
        assert not any(MARK in s for s in statements), name
        assert fast.status_code != 200 or "errors" in fast.json(), name


async def test_a_session_cookie_needs_its_csrf_header_here_too(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    for client in (both.fast, both.plain):
        client.cookies.set("rollcall_session", school.admin_token)
    for headers in ({}, {"X-Rollcall-CSRF": "1"}):
        fast, plain = [
            await client.post("/graphql", json={"query": ROSTER_PAGE}, headers=headers)
            for client in (both.fast, both.plain)
        ]
        assert fast.status_code == plain.status_code
        assert (fast.json() if fast.status_code == 200 else fast.text) == (
            plain.json() if plain.status_code == 200 else plain.text
        )


async def test_the_plan_cache_is_bounded(db: Database) -> None:
    reads = CompiledReads(GraphQL(build_schema()), db, POLICY)
    for i in range(PLAN_CACHE_SIZE + 10):
        assert reads.plan(f"{{ users(first: {i % 500 + 1}) {{ totalCount }} }}", None) is not None
    assert reads.plan("{ school { name } }", None) is None
    assert len(reads.plans) == PLAN_CACHE_SIZE


def a_filter_field(schema: GraphQLSchema) -> None:
    filter_type = schema.get_type("UserFilter")
    assert isinstance(filter_type, GraphQLInputObjectType)
    filter_type.fields["createdAfter"] = GraphQLInputField(GraphQLString)


def an_argument(schema: GraphQLSchema) -> None:
    assert schema.query_type is not None
    schema.query_type.fields["users"].args["createdAfter"] = GraphQLArgument(GraphQLString)


def an_enum_value(schema: GraphQLSchema) -> None:
    order_field = schema.get_type("UserOrderField")
    assert isinstance(order_field, GraphQLEnumType)
    order_field.values["UPDATED_AT"] = GraphQLEnumValue("UPDATED_AT")


@pytest.mark.parametrize(
    "grow, query",
    [
        (a_filter_field, '{ users(filter: {createdAfter: "2024-09-01"}) { totalCount } }'),
        (an_argument, '{ users(createdAfter: "2024-09-01") { totalCount } }'),
        (an_enum_value, "{ users(orderBy: {field: UPDATED_AT}) { totalCount } }"),
    ],
)
def test_a_schema_grown_past_the_translator_is_answered_by_strawberry(
    db: Database, caplog: pytest.LogCaptureFixture, grow: Callable[[GraphQLSchema], None], query: str
) -> None:
    assert CompiledReads(GraphQL(build_schema()), db, POLICY).plan(USERS, None) is not None
    # given: a throwaway schema with one part more than the translator knows
    schema = build_schema()
    grow(schema._schema)
    # when
    reads = CompiledReads(GraphQL(schema), db, POLICY)
    # then: every query of the field goes to Strawberry, and the start-up log says why
    assert reads.plan(query, None) is None
    assert reads.plan(USERS, None) is None
    assert reads.plan(CLASSES, None) is not None
    assert "leave Query.users to Strawberry" in caplog.text
