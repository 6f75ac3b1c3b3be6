"""Automatic persisted queries over real HTTP, as Apollo's clients send them: on GET and POST, with the
compiled read path on and off."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from db.engine import Database
from db.scope import school_scope
from tests.conftest import SchoolFixture

USERS = "query Roster { users(first: 5) { totalCount edges { node { username } } } }"


def sha(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def persisted(query: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(query)}}


async def get(http: httpx.AsyncClient, token: str, digest: str, **params: Any) -> httpx.Response:
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    return await http.get(
        "/graphql",
        params={"extensions": json.dumps(extensions), **params},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )


async def post(http: httpx.AsyncClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/graphql", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def not_found(body: dict[str, Any]) -> bool:
    (error,) = body["errors"]
    return (
        error["message"] == "PersistedQueryNotFound"
        and error["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    )


@pytest.mark.parametrize("path", ["compiled", "strawberry"])
async def test_a_hash_is_not_found_then_learnt_then_enough(
    path: str, server_url: str, strawberry_url: str, school: SchoolFixture
) -> None:
    query = USERS.replace("Roster", f"Roster_{path}_{school.slug.replace('-', '_')}")
    async with httpx.AsyncClient(base_url=server_url if path == "compiled" else strawberry_url) as http:
        token = school.admin_token
        first = await get(http, token, sha(query))
        assert first.status_code == 200 and not_found(first.json()), first.text
        # A short POST is not found either, until the query has been sent once with its hash.
        assert not_found(await post(http, token, {"extensions": persisted(query)}))
        full = await post(http, token, {"query": query, "extensions": persisted(query)})
        expected = {"users": {"totalCount": 1, "edges": [{"node": {"username": "admin"}}]}}
        assert full == {"data": expected}
        again = await get(http, token, sha(query))
        assert again.status_code == 200 and again.json() == {"data": expected}
        assert await post(http, token, {"extensions": persisted(query)}) == {"data": expected}
        # With variables too, and the same answer as the query sent in full.
        by_id = "query ($id: ID!) { user(id: $id) { username } }"
        await post(
            http,
            token,
            {"query": by_id, "variables": {"id": str(school.admin_id)}, "extensions": persisted(by_id)},
        )
        answer = await get(http, token, sha(by_id), variables=json.dumps({"id": str(school.admin_id)}))
        assert answer.json() == {"data": {"user": {"username": "admin"}}}


async def test_a_hash_that_is_not_the_querys_is_refused_and_not_kept(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    other = "{ school { slug } }"
    body = await post(
        http,
        school.admin_token,
        {"query": other, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(USERS)}}},
    )
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert "hash" in body["errors"][0]["message"]
    for extensions in (
        {"persistedQuery": {"version": 2, "sha256Hash": sha(other)}},
        {"persistedQuery": {"version": 1, "sha256Hash": "abc"}},
        {"persistedQuery": "yes"},
    ):
        body = await post(http, school.admin_token, {"query": other, "extensions": extensions})
        assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "BAD_REQUEST", extensions
    # The mismatched hash did not become the other query's.
    mismatched = {"persistedQuery": {"version": 1, "sha256Hash": sha(USERS + " ")}}
    await post(http, school.admin_token, {"query": other, "extensions": mismatched})
    assert not_found(await post(http, school.admin_token, {"extensions": mismatched}))


async def test_get_never_runs_a_mutation(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    mutation = 'mutation { createClass(name: "Persisted", kind: TEACHING) { errors { code } } }'
    body = await post(http, school.admin_token, {"query": mutation, "extensions": persisted(mutation)})
    assert body == {"data": {"createClass": {"errors": []}}}
    refused = await get(http, school.admin_token, sha(mutation))
    assert refused.status_code in (400, 405), refused.text
    assert "mutation" in refused.text.lower()
    async with school_scope(db, school.id) as session:
        count = (
            await session.execute(text("select count(*) from classes where name = 'Persisted'"))
        ).scalar_one()
    assert count == 1


async def test_limits_and_permissions_apply_to_persisted_queries(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    costly = (
        "{ users(first: 500) { edges { node { teachingClasses { members(first: 500) { totalCount } } } } } }"
    )
    body = await post(http, school.admin_token, {"query": costly, "extensions": persisted(costly)})
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    body = (await get(http, school.admin_token, sha(costly))).json()
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    # Learnt from one caller, a hash runs for another as that caller: nobody here.
    response = await http.get("/graphql", params={"extensions": json.dumps(persisted(USERS))})
    body = response.json()
    assert not_found(body) or body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    await post(http, school.admin_token, {"query": USERS, "extensions": persisted(USERS)})
    body = (await http.get("/graphql", params={"extensions": json.dumps(persisted(USERS))})).json()
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAUTHENTICATED"]
