"""GraphQL over HTTP as its specification describes it: the reference audits (graphql-http, run with Node) pass
with no warning, and the answer's media type follows the Accept header on both read paths."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.browser import need, run
from tests.conftest import SchoolFixture
from web.graphql_http import GRAPHQL_RESPONSE, response_media_type

AUDIT = Path(__file__).parent / "http_audit"


def _installed_version() -> str | None:
    installed = AUDIT / "node_modules" / "graphql-http" / "package.json"
    return json.loads(installed.read_text())["version"] if installed.exists() else None


@pytest.mark.slow
async def test_the_graphql_over_http_audits_pass_with_no_warning(server_url: str) -> None:
    node, npm = need("node", "nodejs"), need("npm", "npm")
    pinned = json.loads((AUDIT / "package.json").read_text())["dependencies"]["graphql-http"]
    if await asyncio.to_thread(_installed_version) != pinned:
        # The versions package-lock.json pins, from the npm registry, into tests/http_audit/node_modules.
        await run(npm, "ci", "--prefix", str(AUDIT), "--no-audit", "--no-fund", "--loglevel=error")

    output = await run(node, str(AUDIT / "audit.mjs"), f"{server_url}/graphql")

    results = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert len(results) >= 50, output
    assert [r for r in results if r["status"] != "ok"] == []


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/graphql-response+json", GRAPHQL_RESPONSE),
        ("application/graphql-response+json, application/json;q=0.9", GRAPHQL_RESPONSE),
        ("application/json, application/graphql-response+json;q=0.5", "application/json"),
        ("application/graphql-response+json;q=0, */*", "application/json"),
        ("application/graphql-response+json; charset=utf-8", GRAPHQL_RESPONSE),
        ("text/html", "application/json"),
    ],
)
def test_the_media_type_follows_the_accept_header(accept: str | None, media_type: str) -> None:
    assert response_media_type(accept) == media_type


async def test_a_roster_read_answers_in_the_media_type_asked_for(
    reader: httpx.AsyncClient, school: SchoolFixture
) -> None:
    query = {"query": "{ users(first: 1) { edges { node { username } } } }"}
    auth = {"Authorization": f"Bearer {school.admin_token}"}

    asked = await reader.post("/graphql", json=query, headers={**auth, "accept": GRAPHQL_RESPONSE})
    plain = await reader.post("/graphql", json=query, headers=auth)

    assert asked.status_code == 200
    assert asked.headers["content-type"] == GRAPHQL_RESPONSE
    assert asked.json() == {"data": {"users": {"edges": [{"node": {"username": "admin"}}]}}}
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json"
    assert plain.json() == asked.json()


@pytest.mark.parametrize(
    "query",
    ["{ me { username ", "{ noSuchField }", "query ($n: Int!) { users(first: $n) { totalCount } }"],
    ids=["does not parse", "does not validate", "variables do not fit"],
)
async def test_a_request_error_is_400_with_no_data_for_graphql_response_json(
    reader: httpx.AsyncClient, school: SchoolFixture, query: str
) -> None:
    body = {"query": query, "variables": {"n": "ten"}}
    auth = {"Authorization": f"Bearer {school.admin_token}"}

    asked = await reader.post("/graphql", json=body, headers={**auth, "accept": GRAPHQL_RESPONSE})
    plain = await reader.post("/graphql", json=body, headers={**auth, "accept": "application/json"})

    assert asked.status_code == 400
    assert asked.headers["content-type"] == GRAPHQL_RESPONSE
    assert "data" not in asked.json()
    assert asked.json()["errors"]
    # application/json keeps its old answer: 200, with "data": null
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json"
    assert plain.json()["data"] is None
    assert plain.json()["errors"] == asked.json()["errors"]


async def test_a_field_error_is_still_200_with_data_for_graphql_response_json(
    reader: httpx.AsyncClient,
) -> None:
    # no one is signed in: `school` is refused, its error has a path, and `data` is null but present
    answer = await reader.post(
        "/graphql", json={"query": "{ school { name } }"}, headers={"accept": GRAPHQL_RESPONSE}
    )

    assert answer.status_code == 200
    assert answer.headers["content-type"] == GRAPHQL_RESPONSE
    body = answer.json()
    assert body["data"] is None
    assert body["errors"][0]["path"] == ["school"]
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
