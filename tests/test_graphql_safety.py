"""GraphQL limits, masking of internal errors, GET and batching, introspection and GraphiQL settings."""

from __future__ import annotations

import dataclasses

import httpx
import strawberry
from graphql import parse
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL

from db.engine import Database
from db.scope import school_scope
from gql.cost import MAX_COST, MAX_EXPANDED_SELECTIONS, expanded_selections, too_complex
from gql.errors import MaskInternalErrors
from gql.schema import MAX_DEPTH, build_schema, safety_extensions
from tests.conftest import ADMIN_PASSWORD, SchoolFixture, graphql
from web.settings import Settings

INTROSPECTION = "{ __schema { queryType { name } } }"
LOGIN_BESIDE_A_FAILURE = (
    'mutation { login(school: "SLUG", username: "admin", password: "'
    + ADMIN_PASSWORD
    + '") { token } other: changeMyPassword(currentPassword: "x", newPassword: "y", '
    'confirmPassword: "y") { errors { code } } }'
)
LOGIN_IN_A_FRAGMENT = (
    "mutation { ...SignIn logout { errors { code } } } fragment SignIn on Mutation { "
    'login(school: "SLUG", username: "admin", password: "' + ADMIN_PASSWORD + '") { token } }'
)
MEMBERS_OF_EVERY_CLASS = (
    "query ($n: Int) { users(first: $n) { edges { node { id teachingClasses { name "
    "members(first: $n) { edges { node { id } } } } } } } }"
)
PAGE_WITH_CLASSES = (
    "{ users(first: 500) { edges { node { id registrationClass { name memberCount } "
    "teachingClasses { name } } } } }"
)
TWO_PAGES_WITH_CLASS_MEMBERS = (
    "{ a: users(first: 500) { edges { node { registrationClass { members { totalCount } } } } } "
    "b: users(first: 500) { edges { node { registrationClass { members { totalCount } } } } } }"
)


async def test_too_many_aliases_are_refused(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    query = "{" + " ".join(f"a{i}: me {{ id }}" for i in range(16)) + "}"
    body = await graphql(http, query, token=school.admin_token)
    assert body["data"] is None
    assert "aliases" in body["errors"][0]["message"]


@strawberry.type
class Node:
    name: str
    child: Node | None


@strawberry.type
class NestedQuery:
    @strawberry.field
    def root(self) -> Node:
        return Node(name="root", child=None)


def test_too_deep_a_query_is_refused() -> None:
    schema = strawberry.Schema(query=NestedQuery, extensions=safety_extensions())
    ok = "{ root " + "{ child " * (MAX_DEPTH - 2) + "{ name }" + " }" * (MAX_DEPTH - 1)
    deep = "{ root " + "{ child " * MAX_DEPTH + "{ name }" + " }" * (MAX_DEPTH + 1)
    assert schema.execute_sync(ok).errors is None
    assert "exceeds maximum operation depth" in str(schema.execute_sync(deep).errors)


async def test_too_many_tokens_are_refused(http: httpx.AsyncClient) -> None:
    body = await graphql(http, "{ me { " + "id " * 2100 + "} }")
    assert "token" in body["errors"][0]["message"].lower()


async def test_batches_are_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json=[{"query": "{ me { id } }"}, {"query": "{ me { id } }"}])
    assert response.status_code == 400


async def test_mutations_over_get_are_refused(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", params={"query": "mutation { logout { errors { code } } }"})
    assert response.status_code == 400
    assert "mutations are not allowed when using GET" in response.text
    assert (await http.get("/graphql", params={"query": "{ me { id } }"})).json() == {"data": {"me": None}}


async def test_validation_errors_stay_readable(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    body = await graphql(http, "{ nosuchfield }")
    assert "Cannot query field 'nosuchfield'" in body["errors"][0]["message"]
    body = await graphql(
        http,
        "query ($first: Int) { users(first: $first) { totalCount } }",
        {"first": "ten"},
        token=school.admin_token,
    )
    assert "Int cannot represent non-integer value: 'ten'" in body["errors"][0]["message"]


async def test_internal_errors_are_masked_with_a_request_id() -> None:
    @strawberry.type
    class Query:
        @strawberry.field
        def broken(self) -> str:
            raise RuntimeError("connection to 10.0.0.5 failed: password=hunter2")

    @dataclasses.dataclass
    class FakeContext:
        request_id: str

    class App(GraphQL[FakeContext, None]):
        async def get_context(self, request: object, response: object) -> FakeContext:  # type: ignore[override]
            return FakeContext(request_id="req-123")

    schema = strawberry.Schema(query=Query, extensions=[MaskInternalErrors])
    app = Starlette(routes=[Route("/graphql", App(schema))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = (await client.post("/graphql", json={"query": "{ broken }"})).json()
    assert body["errors"] == [
        {
            "message": "Internal server error.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["broken"],
            "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-123"},
        }
    ]


async def test_introspection_and_graphiql_are_settings(settings: Settings, migrated: object) -> None:
    from web.app import create_app

    closed = dataclasses.replace(settings, graphiql=False, introspection=False)
    app = create_app(closed, migrated.urls())  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = (await client.post("/graphql", json={"query": INTROSPECTION})).json()
        page = await client.get("/graphql", headers={"accept": "text/html"})
        script = await client.get("/static/graphiql/graphiql.bundle.js")
    await app.state.db.dispose()
    assert "introspection has been disabled" in body["errors"][0]["message"]
    assert page.status_code == 404
    assert script.status_code == 404


async def test_introspection_is_on_in_development(http: httpx.AsyncClient) -> None:
    assert (await graphql(http, INTROSPECTION))["data"] == {"__schema": {"queryType": {"name": "Query"}}}


async def test_a_too_costly_query_is_refused_before_it_runs(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    # 500 users x 50 teaching classes x 500 members, on the compiled read path the roster read takes first
    body = await graphql(http, MEMBERS_OF_EVERY_CLASS, {"n": 500}, token=school.admin_token)
    assert body["data"] is None
    [error] = body["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COSTLY", "cost": 12_500_500, "limit": MAX_COST}
    assert "the limit is 50000" in error["message"]
    # and on the Strawberry path, refused before any resolver asks who is signed in
    result = await build_schema().execute(MEMBERS_OF_EVERY_CLASS, {"n": 500})
    assert result.errors and result.errors[0].extensions == error["extensions"]


async def test_a_page_from_the_end_costs_as_one_from_the_start(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    backwards = MEMBERS_OF_EVERY_CLASS.replace("first", "last")
    body = await graphql(http, backwards, {"n": 500}, token=school.admin_token)
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {
        "code": "QUERY_TOO_COSTLY",
        "cost": 12_500_500,
        "limit": MAX_COST,
    }


async def test_the_cost_sums_over_aliases(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    assert "errors" not in await graphql(http, PAGE_WITH_CLASSES, token=school.admin_token)
    body = await graphql(http, TWO_PAGES_WITH_CLASS_MEMBERS, token=school.admin_token)
    assert body["errors"][0]["extensions"]["cost"] == 2 * 500 * (1 + 50)


async def test_small_pages_of_class_members_are_fine(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    body = await graphql(http, MEMBERS_OF_EVERY_CLASS, {"n": 5}, token=school.admin_token)
    assert body == {
        "data": {"users": {"edges": [{"node": {"id": str(school.admin_id), "teachingClasses": []}}]}}
    }


async def test_a_sign_in_beside_other_fields_is_refused_and_starts_no_session(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    async def sessions() -> int:
        async with school_scope(db, school.id) as session:
            return int((await session.execute(text("select count(*) from sessions"))).scalar_one())

    before = await sessions()
    for query in (LOGIN_BESIDE_A_FAILURE, LOGIN_IN_A_FRAGMENT):
        body = await graphql(http, query.replace("SLUG", school.slug))
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        assert "on its own" in body["errors"][0]["message"]
    assert await sessions() == before


def doubling_fragments(levels: int) -> str:
    """Each fragment spreads the next one twice: 2^levels selections once expanded, in a short document."""
    fragments = " ".join(f"fragment F{n} on User {{ id ...F{n + 1} ...F{n + 1} }}" for n in range(levels))
    return f"query {{ me {{ ...F0 }} }} {fragments} fragment F{levels} on User {{ id }}"


async def test_fragments_that_double_at_every_level_are_refused_before_validation(
    http: httpx.AsyncClient,
) -> None:
    # Unbounded, every walk over this document (depth, cost) took 2^20 steps: a worker frozen for seconds.
    body = await graphql(http, doubling_fragments(20))
    assert [error["extensions"]["code"] for error in body["errors"]] == ["QUERY_TOO_COMPLEX"]
    assert "data" not in body or body["data"] is None


def test_expanded_selections_are_counted_once_per_fragment() -> None:
    # F5 is 1 selection, F(n) is id plus two spreads of F(n+1): 1 + 2 * (1 + F(n+1)); then `me` and its spread
    assert expanded_selections(parse(doubling_fragments(5))) == 127
    assert expanded_selections(parse(doubling_fragments(60))) > MAX_EXPANDED_SELECTIONS
    assert too_complex(parse("{ me { id username } }")) is None
