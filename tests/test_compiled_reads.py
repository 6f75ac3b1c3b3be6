"""The compiled read path answers exactly as Strawberry does, in one SQL statement, for the same callers only.

Every query here is sent twice: to the app under test (compiled reads on) and to a second app over the same
database with them off. The answers must be the same JSON, keys in the same order; and the compiled one must
have been one statement after the school was bound (then, with `me` or `school` beside, Strawberry's own), or,
for what the compiled path does not answer, none.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLEnumValue,
    GraphQLField,
    GraphQLID,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
)
from graphql.type.schema import InterfaceImplementations
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.asgi import GraphQL

from db.api_tokens import ApiScope
from db.engine import Database
from db.models import Provider
from db.scope import school_scope
from db.users import UserOrderField
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
query Users($filter: UserFilter, $orderBy: UserOrder, $first: Int, $after: String, $last: Int, $before: String) {{
  users(filter: $filter, orderBy: $orderBy, first: $first, after: $after, last: $last, before: $before) {{
    __typename totalCount
    pageInfo {{ hasNextPage endCursor __typename hasPreviousPage startCursor }}
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
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None,
        compiled: bool = True,
        beside: bool = False,
    ) -> dict[str, Any]:
        """`beside`: root fields Strawberry answers are asked for beside the compiled ones."""
        with counting_statements(self.engine) as statements:
            fast = await graphql(self.fast, query, variables, token=token)
        plain = await graphql(self.plain, query, variables, token=token)
        # The same JSON, keys in the same order.
        assert json.dumps(without_request_ids(fast)) == json.dumps(without_request_ids(plain))
        # rollcall_caller finds the caller and binds their school, in one statement.
        bound = [
            i
            for i, s in enumerate(statements)
            if "set_config('app.school_id'" in s or "rollcall_caller(" in s
        ]
        after_binding = statements[bound[-1] + 1 :] if bound else statements
        if beside:
            # The caller, then the read, in one transaction; then Strawberry for the fields beside.
            assert [s for s in statements if MARK in s] == statements[1:2], statements
            assert "rollcall_caller(" in statements[0] and len(statements) > 2, statements
        elif compiled:
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
    # None (first), then P1, then P2 (add_roster's classes).
    "REGISTRATION_CLASS": [
        {"admin", "amy.b", "dev.p", "ipek", "aero", "emoji"},
        {"ben.c", "finn.o", "tab", "eve"},
        {"cara.b", "odysseus", "quote", "dora", "del"},
    ],
    # The admin (made with the school), then the roster (added in one transaction).
    "UPDATED_AT": [{"admin"}, {p[0] for p in PEOPLE} - {"zed"}],
    # Nobody has signed in (the fixture's session is not a sign-in): names break the tie.
    "LAST_SIGN_IN_AT": [{"admin", *(p[0] for p in PEOPLE)} - {"zed"}],
    # Nobody shown is deleted.
    "DELETED_AT": [{"admin", *(p[0] for p in PEOPLE)} - {"zed"}],
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


async def page_back(both: Both, token: str, variables: dict[str, Any], last: int = 4) -> list[str]:
    """Every page from the end, following startCursor; each page compared on both paths."""
    usernames: list[str] = []
    before = None
    while True:
        body = await both.ask(USERS, {**variables, "last": last, "before": before}, token=token)
        connection = body["data"]["users"]
        usernames = [edge["node"]["username"] for edge in connection["edges"]] + usernames
        assert connection["pageInfo"]["hasNextPage"] is (before is not None)
        if not connection["pageInfo"]["hasPreviousPage"]:
            return usernames
        before = connection["pageInfo"]["startCursor"]


async def test_the_roster_page_is_one_statement(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    body = await both.ask(ROSTER_PAGE, token=school.admin_token)
    assert body["data"]["users"]["totalCount"] == len(PEOPLE)  # the admin in, the deleted pupil out


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("field", list(ORDERS))
async def test_every_ordering_pages_the_same_both_ways(
    both: Both, school: SchoolFixture, roster: dict[str, str], field: str, descending: bool
) -> None:
    order = {"orderBy": {"field": field, "descending": descending}}
    usernames = await page_through(both, school.admin_token, order)
    assert sorted(usernames) == sorted(["admin", *(p[0] for p in PEOPLE if p[0] != "zed")])
    assert_in_order(usernames, ORDERS[field], descending=descending)
    # From the end, page by page, the very same order (ties and all).
    assert await page_back(both, school.admin_token, order, last=3) == usernames


def test_every_ordering_is_tested() -> None:
    assert sorted(ORDERS) == sorted(UserOrderField)


@pytest.mark.parametrize("descending", [False, True])
async def test_deleted_users_by_when(
    both: Both, db: Database, school: SchoolFixture, roster: dict[str, str], descending: bool
) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(
            text("update users set deleted_at = now() - interval '1 day' where username = 'eve'")
        )
    order = {"orderBy": {"field": "DELETED_AT", "descending": descending}, "filter": {"status": "ALL"}}
    usernames = await page_through(both, school.admin_token, order, first=5)
    assert_in_order(usernames, [EVERYONE - {"eve"}, {"eve"}, {"zed"}], descending=descending)
    assert await page_back(both, school.admin_token, order, last=5) == usernames


@pytest.mark.parametrize("descending", [False, True])
async def test_users_by_when_they_last_signed_in(
    both: Both, db: Database, school: SchoolFixture, roster: dict[str, str], descending: bool
) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "update users set last_sign_in_at = now() - case username when 'eve' then interval '1 day' "
                "else interval '0' end where username in ('eve', 'admin')"
            )
        )
    order = {"orderBy": {"field": "LAST_SIGN_IN_AT", "descending": descending}}
    usernames = await page_through(both, school.admin_token, order, first=5)
    assert_in_order(
        usernames, [EVERYONE - {"eve", "admin", "zed"}, {"eve"}, {"admin"}], descending=descending
    )
    assert await page_back(both, school.admin_token, order, last=5) == usernames


async def test_a_cursor_is_good_only_for_its_ordering_and_filter(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    token = school.admin_token
    page = (await both.ask(USERS, {"first": 3, "filter": {"search": " b "}}, token=token))["data"]["users"]
    end, start = page["pageInfo"]["endCursor"], page["pageInfo"]["startCursor"]
    # The same ordering and filter (written another way) reads on.
    again = await both.ask(USERS, {"first": 3, "after": end, "filter": {"search": "b"}}, token=token)
    assert again["data"]["users"]["pageInfo"]["hasPreviousPage"] is True
    others: list[dict[str, Any]] = [
        {"orderBy": {"field": "USERNAME"}},
        {"orderBy": {"field": "SURNAME", "descending": True}},
        {"orderBy": {"field": "FIRST_NAME"}},
        {},
        {"filter": {"search": "br"}},
        {"filter": {"search": "b", "type": "PUPIL"}},
        {"filter": {"search": "b", "status": "ALL"}},
        {"filter": {"search": "b", "hasRegistrationClass": True}},
        {"filter": {"search": "b", "notInClassId": roster["P1"]}},
        {"filter": {"search": "b", "classId": roster["P1"]}},
    ]
    for variables in others:
        for paging in ({"first": 3, "after": end}, {"last": 3, "before": start}):
            body = await both.ask(USERS, {**variables, **paging}, token=token, compiled=False)
            assert body["data"] is None, (variables, paging)
            (error,) = body["errors"]
            assert error["extensions"]["code"] == "BAD_REQUEST"
            assert error["message"] == (
                "That cursor was given out for another ordering or filter of this list: start again from the "
                "first page."
            )


async def test_counts_without_rows(both: Both, school: SchoolFixture, roster: dict[str, str]) -> None:
    for paging in ("first: 0", "last: 0"):
        body = await both.ask(
            f"""{{ users({paging}) {{ totalCount edges {{ cursor }}
                   pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }}""",
            token=school.admin_token,
        )
        more = {"hasNextPage": paging == "first: 0", "hasPreviousPage": paging == "last: 0"}
        assert body["data"]["users"] == {
            "totalCount": len(PEOPLE),
            "edges": [],
            "pageInfo": {**more, "startCursor": None, "endCursor": None},
        }


async def test_first_and_last_together_are_refused(both: Both, school: SchoolFixture) -> None:
    for paging in ("first: 1, last: 1", "last: 501", "last: -1"):
        body = await both.ask(
            f"{{ users({paging}) {{ totalCount }} }}", token=school.admin_token, compiled=False
        )
        assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST", body


async def test_a_class_roster_pages_from_the_end(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    query = """query ($before: String) { classes(kind: REGISTRATION) { name
      members(last: 2, before: $before) { pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
        edges { cursor node { username } } } } }"""
    body = await both.ask(query, token=school.admin_token)
    p1 = body["data"]["classes"][0]["members"]
    assert p1["pageInfo"]["hasPreviousPage"] is True and len(p1["edges"]) == 2
    # A roster's cursor names its class: the general path reads on from it (and refuses it for another class).
    before = await both.ask(
        query, {"before": p1["pageInfo"]["startCursor"]}, token=school.admin_token, compiled=False
    )
    assert before["data"] is None and before["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    single = """query ($id: ID!, $before: String) { node(id: $id) { ... on SchoolClass {
      members(last: 2, before: $before) { edges { node { username } } } } } }"""
    earlier = await both.ask(
        single,
        {"id": roster["P1"], "before": p1["pageInfo"]["startCursor"]},
        token=school.admin_token,
        compiled=False,
    )
    assert len(earlier["data"]["node"]["members"]["edges"]) == 2


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
        # Full names, either way round, any case and spacing.
        ({"search": "Amy Brown"}, {"amy.b"}),
        ({"search": " brown   AMY "}, {"amy.b"}),
        ({"search": "n brow"}, {"ben.c"}),
        ({"search": "Brown Cara"}, {"cara.b"}),
        ({"search": "Amy Clarke"}, set()),
        # The add-pupils picker.
        ({"hasRegistrationClass": False}, {"admin", "amy.b", "dev.p", "ipek", "aero", "emoji"}),
        ({"hasRegistrationClass": True, "type": "TEACHER"}, set()),
        ({"hasRegistrationClass": False, "type": "PUPIL", "status": "ALL"}, {"amy.b", "ipek", "emoji"}),
        ({"notInClassId": "P1"}, EVERYONE - {"ben.c", "eve", "finn.o", "tab"}),
        ({"notInClassId": "Choir", "classId": "P1"}, {"tab"}),
        ({"notInClassId": "P2", "hasRegistrationClass": True}, {"ben.c", "eve", "finn.o", "tab"}),
        # A malformed id finds nothing, as an unknown one does.
        ({"classId": "nope"}, set()),
        ({"notInClassId": "nope"}, EVERYONE),
    ],
)
async def test_filters_answer_the_same_both_ways(
    both: Both, school: SchoolFixture, roster: dict[str, str], filter: dict[str, Any], expected: set[str]
) -> None:
    for name in ("classId", "notInClassId"):
        if name in filter:
            filter = {**filter, name: roster.get(filter[name], filter[name])}
    order = {"field": "SURNAME", "descending": True}
    usernames = await page_through(both, school.admin_token, {"filter": filter, "orderBy": order})
    assert sorted(usernames) == sorted(expected)
    assert_in_order(usernames, ORDERS["SURNAME"], descending=True)


@pytest.mark.parametrize(
    "since, status, expected",
    [
        ("2025-01-01T00:00:00+00:00", "ACTIVE", {"amy.b", "ben.c"}),
        ("2025-01-01T00:00:00Z", "ALL", {"amy.b", "ben.c", "zed"}),
        ("2025-06-01T12:00:00+02:00", "ACTIVE", {"ben.c"}),
        ("2030-01-01T00:00:00+00:00", "ALL", set()),
    ],
)
async def test_updated_since_answers_the_same_both_ways(
    both: Both,
    db: Database,
    school: SchoolFixture,
    roster: dict[str, str],
    since: str,
    status: str,
    expected: set[str],
) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(text("update users set updated_at = '2024-09-01 08:30:00+00'"))
        await session.execute(
            text("update users set updated_at = '2025-03-01 10:00:00+00' where username in ('amy.b', 'zed')")
        )
        await session.execute(
            text("update users set updated_at = '2025-06-01 10:00:00+00' where username = 'ben.c'")
        )
    usernames = await page_through(
        both, school.admin_token, {"filter": {"updatedSince": since, "status": status}}
    )
    assert sorted(usernames) == sorted(expected)
    literal = f'{{ users(filter: {{updatedSince: "{since}", status: {status}}}) {{ totalCount }} }}'
    body = await both.ask(literal, token=school.admin_token)
    assert body["data"]["users"]["totalCount"] == len(expected)


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
        ("{ me { email } }", {}),
        ("query ($id: ID!) { users { totalCount } user(id: $id) { username } }", {"id": roster["amy.b"]}),
        ("{ users { totalCount } __schema { queryType { name } } }", {}),
        ("{ __schema { queryType { name } } }", {}),
        ("query ($id: ID!) { user(id: $id) { username } }", {"id": roster["amy.b"]}),
        ('mutation { createClass(name: "", kind: TEACHING) { errors { code } } }', {}),
        ('{ schoolClass(id: "nope") { name } }', {}),
        ("{ users(first: 501) { totalCount } }", {}),
        ('{ users(before: "bm90LWEtY3Vyc29y") { totalCount } }', {}),
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
    assert reads.plan("{ me { email } }", None) is None
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
    order_field.values["BIRTHDAY"] = GraphQLEnumValue("BIRTHDAY")


@pytest.mark.parametrize(
    "grow, query",
    [
        (a_filter_field, '{ users(filter: {createdAfter: "2024-09-01"}) { totalCount } }'),
        (an_argument, '{ users(createdAfter: "2024-09-01") { totalCount } }'),
        (an_enum_value, "{ users(orderBy: {field: BIRTHDAY}) { totalCount } }"),
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


# The users table as a front end writes it: colocated fragments, named and inline, with aliases and
# __typename at every level.
SCREEN = """
query Screen($first: Int = 50, $order: UserOrder = {field: SURNAME}) {
  users(first: $first, orderBy: $order) { ...UsersTable }
}
fragment UsersTable on UserConnection {
  __typename totalCount
  pageInfo { ...Page }
  edges { __typename cursor node { ...UserRow } }
}
fragment Page on PageInfo { __typename hasNextPage endCursor }
fragment UserRow on User {
  __typename id login: username firstName surname type
  ... on User { isAdmin version }
  ... { createdAt }
  registrationClass { ...ClassName }
  teachingClasses { ...ClassName kind }
}
fragment ClassName on SchoolClass { __typename id name }
"""
CLASS_CARDS = """
{ classes { ...ClassCard } }
fragment ClassCard on SchoolClass {
  __typename id name
  ... on SchoolClass { memberCount kind }
  members(first: 3) { ...Members }
}
fragment Members on UserConnection {
  __typename totalCount pageInfo { ...Page }
  edges { cursor node { ...Member } }
}
fragment Member on User { username registrationClass { name members(type: PUPIL) { totalCount } } }
fragment Page on PageInfo { hasNextPage endCursor __typename }
"""


async def test_fragments_are_answered_as_strawberry_answers_them(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    body = await both.ask(SCREEN, token=school.admin_token)
    users = body["data"]["users"]
    assert users["__typename"] == "UserConnection" and users["totalCount"] == len(PEOPLE)
    first = users["edges"][0]["node"]
    assert list(first)[:3] == ["__typename", "id", "login"] and "createdAt" in first
    await both.ask(
        SCREEN, {"first": 3, "order": {"field": "USERNAME", "descending": True}}, token=school.admin_token
    )
    classes = await both.ask(CLASS_CARDS, token=school.admin_token)
    assert [c["name"] for c in classes["data"]["classes"]] == ["P1", "P2", "Art", "Choir"]
    assert classes["data"]["classes"][0]["members"]["totalCount"] == 4
    # Fragments spread at the root, in lists of classes and in a class's members.
    await both.ask(
        """query { ...Everything }
           fragment Everything on Query { __typename everyone: users { totalCount } classes { ...ClassCard } }
        """
        + CLASS_CARDS.split("{ classes { ...ClassCard } }", 1)[1],
        token=school.admin_token,
    )
    await both.ask(
        """{ users(first: 8) { edges { node { ... on User { teachingClasses { ... on SchoolClass { name }
             members(first: 2) { edges { node { ...Row } } } } } registrationClass { ...Class } } } } }
           fragment Row on User { username __typename }
           fragment Class on SchoolClass { name members { totalCount } }""",
        token=school.admin_token,
    )


async def test_a_key_asked_for_twice_is_merged_as_strawberry_merges_it(
    both: Both, school: SchoolFixture, roster: dict[str, str]
) -> None:
    body = await both.ask(
        """{ users(first: 5) { totalCount ...Rows edges { node { username surname } }
                               totalCount pageInfo { hasNextPage } ...Rows }
             users(first: 5) { pageInfo { endCursor } } }
           fragment Rows on UserConnection {
             edges { cursor node { id username registrationClass { name } } }
             pageInfo { endCursor } }""",
        token=school.admin_token,
    )
    users = body["data"]["users"]
    assert list(users) == ["totalCount", "edges", "pageInfo"]
    assert list(users["pageInfo"]) == ["endCursor", "hasNextPage"]
    assert list(users["edges"][0]["node"]) == ["id", "username", "registrationClass", "surname"]
    await both.ask("{ users { totalCount totalCount } }", token=school.admin_token)
    body = await both.ask(
        """{ users(orderBy: {field: USERNAME}) { edges { node { username teachingClasses { name }
                               ...Teaching mine: teachingClasses { id } } } } }
           fragment Teaching on User { teachingClasses { id kind name } }""",
        token=school.admin_token,
    )
    assert any(len(edge["node"]["teachingClasses"]) == 2 for edge in body["data"]["users"]["edges"])
    # Aliases through fragments.
    await both.ask(
        """{ rows: users(first: 3) { more: pageInfo { ...More } list: edges { ...Edge } }
             rows: users(first: 3) { list: edges { at: cursor } } }
           fragment More on PageInfo { next: hasNextPage }
           fragment Edge on UserEdge { who: node { name: firstName login: username reg: registrationClass { n: name } } }""",
        token=school.admin_token,
    )


@pytest.mark.parametrize(
    "variables",
    [{"more": True, "quiet": False}, {"more": False, "quiet": True}, {"more": True, "quiet": True}],
)
async def test_skip_and_include(
    both: Both, school: SchoolFixture, roster: dict[str, str], variables: dict[str, Any]
) -> None:
    query = """query ($more: Boolean!, $quiet: Boolean!) {
      users(first: 4) {
        totalCount @skip(if: $quiet)
        ... @include(if: $more) { edges { cursor } }
        ...Rows @skip(if: $quiet)
        pageInfo @include(if: false) { hasNextPage }
        edges { node { username @include(if: true) firstName @skip(if: true) } }
      }
      school @include(if: $more) { name }
    }
    fragment Rows on UserConnection { edges { node { id @skip(if: $more) surname } } }"""
    await both.ask(query, variables, token=school.admin_token)
    await both.ask(
        query.replace("school @include", "me @include(if: $more) { email } school @include"),
        variables,
        token=school.admin_token,
        beside=variables["more"],
    )
    await both.ask(
        "{ users { totalCount @skip(if: true) edges @include(if: false) { cursor } } }",
        token=school.admin_token,
    )


ME = "me { ...Me } "
ME_FRAGMENT = " fragment Me on User { __typename id username isAdmin registrationClass { name } }"
# A field of the user's the statement does not read: `me` is then answered by Strawberry, beside.
ME_BESIDE = " fragment Me on User { __typename id username email isAdmin registrationClass { name } }"


@pytest.mark.parametrize("me", [ME_FRAGMENT, ME_BESIDE], ids=["compiled", "beside"])
async def test_me_and_school_beside_the_users_table(
    both: Both, db: Database, school: SchoolFixture, roster: dict[str, str], me: str
) -> None:
    page = "users(first: 50, orderBy: {field: SURNAME}) { ...UsersTable }"
    table = SCREEN.split("\n}\n", 1)[1]
    beside = me == ME_BESIDE
    everything = """school { __typename id slug name provider pupilMinPasswordLength qrSignInEnabled
                             schoolYearEndMonth schoolYearEndDay deletedUserRetentionDays
                             teachersCanResetPupilPasswords }"""
    for query in (
        f"{{ {ME} school {{ id name slug __typename }} {page} }}{table}{me}",
        f"{{ {page} {ME} }}{table}{me}",
        f"{{ school {{ name }} {page} who: {ME} classes {{ name }} __typename }}{table}{me}",
        (
            f"query Launchpad {{ ...Screen }} fragment Screen on Query {{ {ME} school {{ name }} {page} }}"
            f"{table}{me}"
        ),
        f"{{ {everything} {page} {ME} }}{table}{me}",
    ):
        body = await both.ask(query, token=school.admin_token, beside=beside)
        assert body["data"]["users"]["totalCount"] == len(PEOPLE)
    assert body["data"]["school"]["slug"] == school.slug and body["data"]["school"]["provider"] == "MANUAL"
    body = await both.ask(
        f"{{ school {{ name }} {page} school {{ slug }} }}{table}", token=school.admin_token
    )
    assert body["data"]["school"] == {"name": f"School {school.slug}", "slug": school.slug}
    order = await both.ask(
        f"{{ school {{ name }} {page} {ME} }}{table}{me}", token=school.admin_token, beside=beside
    )
    assert list(order["data"]) == ["school", "users", "me"]
    assert order["data"]["me"]["id"] == str(school.admin_id)
    teacher = await sign_in_as(db, school, uuid.UUID(roster["dev.p"]))
    mine = await both.ask(f"{{ {ME} {page} }}{table}{me}", token=teacher, beside=beside)
    assert mine["data"]["me"]["username"] == "dev.p"
    # `me` on its own, for anyone signed in.
    pupil = await sign_in_as(db, school, uuid.UUID(roster["amy.b"]))
    body = await both.ask(
        "{ me { id username teachingClasses { name } registrationClass { name } } }", token=pupil
    )
    assert body["data"]["me"]["username"] == "amy.b"


async def test_refusals_beside_are_strawberry_s_own(
    both: Both, db: Database, school: SchoolFixture, roster: dict[str, str]
) -> None:
    teacher = await sign_in_as(db, school, uuid.UUID(roster["dev.p"]))
    app = await make_api_token(db, school)
    # A field only admins may read: school is non-null, so data is null, as Strawberry says.
    refused = await both.ask(
        "{ users { totalCount }\n  school { name schoolYearEndMonth } }", token=teacher, compiled=False
    )
    assert refused["data"] is None
    [error] = refused["errors"]
    assert error["path"] == ["school", "schoolYearEndMonth"] and error["extensions"]["code"] == "FORBIDDEN"
    assert error["locations"] == [{"line": 2, "column": 17}]
    # An app is no person: `me` is null (in the statement, or beside), and `school` is refused.
    body = await both.ask("{ me { id } users { totalCount } }", token=app)
    assert body["data"] == {"me": None, "users": {"totalCount": len(PEOPLE)}}
    body = await both.ask("{ me { email } users { totalCount } }", token=app, beside=True)
    assert body["data"] == {"me": None, "users": {"totalCount": len(PEOPLE)}}
    body = await both.ask(
        "query ($first: Int) { users(first: $first) { totalCount } ...S } fragment S on Query { school { name } }",
        {"first": 2},
        token=app,
        compiled=False,
    )
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["errors"][0]["locations"] == [{"line": 1, "column": 88}]


async def test_a_school_beside_is_the_caller_s_own(
    both: Both, owner_engine: AsyncEngine, db: Database, school: SchoolFixture, roster: dict[str, str]
) -> None:
    other = await make_school(owner_engine, db)
    query = "{ school { id slug } users(first: 100) { totalCount edges { node { id } } } me { id } }"
    for beside in (False, True):
        if beside:
            query = query.replace("me { id }", "me { id email }")
        ours = await both.ask(query, token=school.admin_token, beside=beside)
        theirs = await both.ask(query, token=other.admin_token, beside=beside)
        assert ours["data"]["school"]["id"] == str(school.id)
        assert theirs["data"]["school"]["id"] == str(other.id)
        assert theirs["data"]["me"]["id"] == str(other.admin_id)
        assert [edge["node"]["id"] for edge in theirs["data"]["users"]["edges"]] == [str(other.admin_id)]
        assert ours["data"]["users"]["totalCount"] == len(PEOPLE)
    # Whoever the compiled fields refuse gets the whole answer from Strawberry.
    pupil = await sign_in_as(db, school, uuid.UUID(roster["amy.b"]))
    with counting_statements(both.engine) as statements:
        fast = await both.fast.post(
            "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {pupil}"}
        )
    plain = await both.plain.post(
        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {pupil}"}
    )
    assert without_request_ids(fast.json()) == without_request_ids(plain.json())
    assert fast.json()["data"] is None and not any(MARK in s for s in statements)


def a_node_interface(schema: GraphQLSchema) -> None:
    """User implements an interface, as a Relay schema has it."""
    node = GraphQLInterfaceType("Node", {"id": GraphQLField(GraphQLNonNull(GraphQLID))})
    user = schema.get_type("User")
    assert isinstance(user, GraphQLObjectType)
    user.interfaces = (*user.interfaces, node)
    schema.type_map["Node"] = node
    schema._implementations_map["Node"] = InterfaceImplementations(objects=[user], interfaces=[])
    schema._sub_type_map.clear()


def test_a_fragment_on_an_interface_is_answered_by_strawberry(db: Database) -> None:
    schema = build_schema()
    a_node_interface(schema._schema)
    reads = CompiledReads(GraphQL(schema), db, POLICY)
    assert reads.plan("{ users { edges { node { ... on User { id } } } } }", None) is not None
    assert reads.plan("{ users { edges { node { ... on Node { id } } } } }", None) is None
    assert reads.plan("{ users { edges { node { ...N } } } } fragment N on Node { id }", None) is None
