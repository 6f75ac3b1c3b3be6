"""The server over real HTTP: GraphQL, liveness and readiness."""

from __future__ import annotations

import re

import httpx

from tests.conftest import SchoolFixture, graphql

SCHOOL = "query { school { id slug name provider pupilMinPasswordLength qrSignInEnabled } }"


async def test_healthz_answers(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_school_answers_the_callers_own_school(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    body = await graphql(http, SCHOOL, token=school.admin_token)
    assert body == {
        "data": {
            "school": {
                "id": str(school.id),
                "slug": school.slug,
                "name": f"School {school.slug}",
                "provider": "MANUAL",
                "pupilMinPasswordLength": 4,
                "qrSignInEnabled": True,
            }
        }
    }


async def test_school_without_a_token_is_unauthenticated(http: httpx.AsyncClient) -> None:
    body = await graphql(http, SCHOOL)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_an_unknown_token_is_unauthenticated(http: httpx.AsyncClient) -> None:
    body = await graphql(http, SCHOOL, token="rcs_not-a-real-token")
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_every_response_carries_a_request_id(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert len(response.headers["x-request-id"]) == 32


async def test_graphiql_is_served_to_browsers(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
    # everything it loads is Rollcall's own, and nothing else may run
    sources = re.findall(r'(?:src|href)="([^"]*)"', response.text)
    assert sources and all(source.startswith(("/static/graphiql/", "data:")) for source in sources)
    assert "<script>" not in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    for source in sources:
        if source.startswith("/"):
            assert (await http.get(source)).status_code == 200, source
