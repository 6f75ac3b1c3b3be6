"""API tokens for third-party apps: issued once, listed without secrets, revoked at once."""

from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import text

from db.engine import Database
from db.scope import school_scope
from tests.conftest import SchoolFixture, graphql

CREATE = """
mutation ($name: String!) {
  createApiToken(name: $name, scopes: [ROSTER_READ]) {
    token apiToken { id name scopes createdAt lastUsedAt revokedAt } errors { code message field }
  }
}
"""
REVOKE = (
    "mutation ($id: ID!) { revokeApiToken(id: $id) { apiToken { id revokedAt } errors { code message } } }"
)
LIST = "{ apiTokens { id name scopes revokedAt } }"
ME = "{ me { id } }"


async def create(http: httpx.AsyncClient, school: SchoolFixture, name: str = "Reading app") -> dict:  # type: ignore[type-arg]
    body = await graphql(http, CREATE, {"name": name}, token=school.admin_token)
    return body["data"]["createApiToken"]  # type: ignore[no-any-return]


async def test_a_token_is_shown_once_and_stored_as_a_hash(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    created = await create(http, school)
    assert created["errors"] == []
    secret = created["token"]
    assert secret.startswith("rca_") and len(secret) >= 4 + 43
    assert created["apiToken"]["scopes"] == ["ROSTER_READ"]
    listed = (await graphql(http, LIST, token=school.admin_token))["data"]["apiTokens"]
    assert listed == [
        {"id": created["apiToken"]["id"], "name": "Reading app", "scopes": ["ROSTER_READ"], "revokedAt": None}
    ]
    async with school_scope(db, school.id) as session:
        stored = (await session.execute(text("select token_hash from api_tokens"))).scalar_one()
    assert stored == hashlib.sha256(secret.encode()).digest()


async def test_a_token_can_read_the_roster_but_is_not_a_person(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    secret = (await create(http, school))["token"]
    assert (await graphql(http, ME, token=secret))["data"]["me"] is None
    refused = await graphql(http, "{ school { id } }", token=secret)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    refused = await graphql(
        http, 'mutation { createApiToken(name: "x", scopes: [ROSTER_READ]) { token } }', token=secret
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_revoking_takes_effect_on_the_next_request(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    created = await create(http, school)
    secret = created["token"]
    assert "errors" not in await graphql(http, "{ me { id } }", token=secret)
    revoked = await graphql(http, REVOKE, {"id": created["apiToken"]["id"]}, token=school.admin_token)
    assert revoked["data"]["revokeApiToken"]["apiToken"]["revokedAt"] is not None
    after = await graphql(http, "{ users { totalCount } }", token=secret)
    assert after["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_bad_input_is_a_clear_error(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    assert (await create(http, school, name="  "))["errors"][0]["field"] == "name"
    body = await graphql(http, REVOKE, {"id": "not-a-uuid"}, token=school.admin_token)
    assert body["data"]["revokeApiToken"]["errors"][0]["code"] == "NOT_FOUND"
    empty = await graphql(
        http,
        'mutation { createApiToken(name: "x", scopes: []) { errors { field } } }',
        token=school.admin_token,
    )
    assert empty["data"]["createApiToken"]["errors"] == [{"field": "scopes"}]


async def test_another_schools_token_cannot_be_revoked(
    http: httpx.AsyncClient, school: SchoolFixture, owner_engine: object, db: Database
) -> None:
    from tests.conftest import make_school

    other = await make_school(owner_engine, db)  # type: ignore[arg-type]
    created = await create(http, school)
    body = await graphql(http, REVOKE, {"id": created["apiToken"]["id"]}, token=other.admin_token)
    assert body["data"]["revokeApiToken"]["errors"][0]["code"] == "NOT_FOUND"
    assert (await graphql(http, LIST, token=school.admin_token))["data"]["apiTokens"][0]["revokedAt"] is None


async def test_a_token_in_the_url_is_refused(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    secret = (await create(http, school))["token"]
    for params in ({"token": secret}, {"access_token": secret}, {"query": "{ me { id } }", "t": secret}):
        response = await http.get("/graphql", params=params)
        assert response.status_code == 400
        assert "Authorization header" in response.text
