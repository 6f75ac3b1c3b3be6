"""The compiled sign-in answers exactly as Strawberry does, and only what it knows.

Every sign-in here is sent to the app under test (compiled path on) and to a second app over the same
database with it off. The bodies must be the same JSON, keys in the same order (the new session's token
aside, which is random), and the responses the same status, media type and cookies (their values aside);
the compiled one must have been answered by the compiled path, or, for what it does not know, by Strawberry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import Route

from db import throttle
from gql.compiled import CompiledReads
from gql.compiled_signin import CompiledSignIn
from tests.conftest import ADMIN_PASSWORD, SchoolFixture, make_user
from web.http_auth import CSRF_HEADER, DEVICE_COOKIE, SESSION_COOKIE

EVERYTHING = """
mutation SignIn($school: String!, $username: String!, $password: String!) {
  login(school: $school, username: $username, password: $password) {
    __typename token
    errors { code message path field userId attemptsRemaining __typename }
    user { __typename id username firstName surname type isAdmin mustChangePassword createdAt updatedAt
           deletedAt version externalId }
  }
}
"""
ALIASED = """
mutation ($school: String!, $password: String!) {
  signIn: login(school: $school, username: "Amy.Brown ", password: $password) {
    wrong: errors { why: code } secret: token who: user { name: username kind: type }
  }
}
"""
# Not plain sign-ins: a field with a permission class, one with a resolver, fragments, a directive, two
# sign-ins at once, a root field beside, another operation in the document.
STRAWBERRYS = [
    EVERYTHING.replace("externalId", "externalId email"),
    EVERYTHING.replace("externalId", "externalId registrationClass { name }"),
    """mutation ($school: String!, $username: String!, $password: String!) {
      login(school: $school, username: $username, password: $password) { ...P } }
      fragment P on LoginPayload { token errors { code } }""",
    """mutation ($school: String!, $username: String!, $password: String!, $no: Boolean!) {
      login(school: $school, username: $username, password: $password) { token @skip(if: $no) errors { code } } }""",
    """mutation ($school: String!, $username: String!, $password: String!) {
      a: login(school: $school, username: $username, password: $password) { token errors { code } }
      b: login(school: $school, username: $username, password: $password) { token errors { code } } }""",
    """mutation ($school: String!, $username: String!, $password: String!) {
      __typename login(school: $school, username: $username, password: $password) { token errors { code } } }""",
    """mutation ($school: String!, $username: String!, $password: String!) {
      login(school: $school, username: $username, password: $password) { token errors { code code } } }""",
]


def new_client() -> str:
    """An address of its own (the test server believes X-Forwarded-For from loopback)."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def compiled_sign_in(app: Starlette) -> CompiledSignIn:
    route = next(r for r in app.routes if isinstance(r, Route) and r.path == "/graphql")
    reads = route.app if isinstance(route.app, CompiledReads) else route.endpoint
    assert isinstance(reads, CompiledReads) and reads.sign_in is not None
    return reads.sign_in


@contextmanager
def answered(sign_in: CompiledSignIn) -> Iterator[list[bool]]:
    """Whether each request the block makes was answered by the compiled path (True) or left to the view."""
    seen: list[bool] = []
    real = sign_in.answer

    async def answer(*args: Any, **kwargs: Any) -> Any:
        response = await real(*args, **kwargs)
        seen.append(response is not None)
        return response

    sign_in.answer = answer  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del sign_in.answer


def cookies(response: httpx.Response) -> list[str]:
    """Each cookie set, its value left out."""
    return sorted(
        ";".join([cookie.split(";")[0].split("=")[0], *cookie.split(";")[1:]])
        for cookie in response.headers.get_list("set-cookie")
    )


def without_token(body: dict[str, Any]) -> dict[str, Any]:
    text_of = json.dumps(body)
    for payload in (body.get("data") or {}).values():
        for value in payload.values():
            if isinstance(value, str) and value.startswith("rcs_"):
                text_of = text_of.replace(value, "<token>")
    loaded: dict[str, Any] = json.loads(text_of)
    return loaded


class Both:
    def __init__(self, fast: httpx.AsyncClient, plain: httpx.AsyncClient, sign_in: CompiledSignIn) -> None:
        self.fast, self.plain, self.sign_in = fast, plain, sign_in

    async def ask(
        self,
        query: str,
        variables: dict[str, Any],
        *,
        compiled: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], httpx.Response]:
        answers = []
        with answered(self.sign_in) as seen:
            for http in (self.fast, self.plain):
                response = await http.post(
                    "/graphql", json={"query": query, "variables": variables}, headers=headers or {}
                )
                http.cookies.clear()
                answers.append(response)
        fast, plain = answers
        assert seen == ([True] if compiled else [False] * len(seen)), seen
        assert fast.status_code == plain.status_code
        assert fast.headers["content-type"] == plain.headers["content-type"]
        assert cookies(fast) == cookies(plain)
        assert json.dumps(without_token(fast.json())) == json.dumps(without_token(plain.json()))
        body: dict[str, Any] = fast.json()
        return body, fast


@pytest.fixture
def both(http: httpx.AsyncClient, strawberry_http: httpx.AsyncClient, app: Starlette) -> Both:
    return Both(http, strawberry_http, compiled_sign_in(app))


async def test_a_sign_in_answers_as_strawberry_does(both: Both, school: SchoolFixture) -> None:
    variables = {"school": school.slug, "username": "admin", "password": ADMIN_PASSWORD}
    body, response = await both.ask(EVERYTHING, variables, headers={"X-Forwarded-For": new_client()})
    payload = body["data"]["login"]
    assert payload["errors"] == [] and payload["token"].startswith("rcs_")
    assert payload["user"]["id"] == str(school.admin_id) and payload["user"]["type"] == "TEACHER"
    assert {SESSION_COOKIE, DEVICE_COOKIE} <= set(response.cookies)
    # The token signs in.
    me = await both.fast.post(
        "/graphql", json={"query": "{ me { id } }"}, headers={"Authorization": f"Bearer {payload['token']}"}
    )
    assert me.json()["data"]["me"]["id"] == str(school.admin_id)


async def test_every_kind_of_wrong_answers_as_strawberry_does(
    both: Both, db: Any, school: SchoolFixture
) -> None:
    for slug, username, password in [
        ("no-such-school", "admin", ADMIN_PASSWORD),
        ("Not A Slug!", "admin", ADMIN_PASSWORD),
        (school.slug, "nobody", ADMIN_PASSWORD),
        (school.slug, "ad\x00min", ADMIN_PASSWORD),
        (school.slug, "admin", "wrong-password"),
    ]:
        body, _ = await both.ask(
            EVERYTHING,
            {"school": slug, "username": username, "password": password},
            headers={"X-Forwarded-For": new_client()},
        )
        assert body["data"]["login"]["errors"][0]["code"] == "INVALID_CREDENTIALS", body


async def test_aliases_literals_and_a_browser_answer_as_strawberry_does(
    both: Both, db: Any, school: SchoolFixture
) -> None:
    await make_user(db, school, username="amy.brown", password="pupil-pass")
    variables = {"school": f" {school.slug.upper()}", "password": "pupil-pass"}
    body, _ = await both.ask(ALIASED, variables, headers={"X-Forwarded-For": new_client()})
    assert body["data"]["signIn"]["who"] == {"name": "amy.brown", "kind": "PUPIL"}
    assert body["data"]["signIn"]["secret"].startswith("rcs_")
    # A browser gets the session as a cookie only, never in the body.
    body, response = await both.ask(
        ALIASED, variables, headers={"X-Forwarded-For": new_client(), CSRF_HEADER: "1"}
    )
    assert body["data"]["signIn"]["secret"] is None and SESSION_COOKIE in response.cookies


async def test_a_throttled_sign_in_answers_as_strawberry_does(
    both: Both, owner_engine: AsyncEngine, school: SchoolFixture
) -> None:
    client = new_client()
    own = throttle.keys(f"{school.slug}:admin", client).own
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("insert into sign_in_throttle values (:key, :attempts, now() + interval '15 minutes')"),
            {"key": own, "attempts": throttle.ACCOUNT_LIMIT},
        )
    variables = {"school": school.slug, "username": "admin", "password": ADMIN_PASSWORD}
    body, response = await both.ask(EVERYTHING, variables, headers={"X-Forwarded-For": client})
    assert [e["code"] for e in body["data"]["login"]["errors"]] == ["RATE_LIMITED"]
    assert not response.headers.get_list("set-cookie")
    # Each of the two attempts counted.
    async with owner_engine.begin() as connection:
        attempts = (
            await connection.execute(
                text("select attempts from sign_in_throttle where key = :key"), {"key": own}
            )
        ).scalar_one()
    assert attempts == throttle.ACCOUNT_LIMIT + 2


async def test_a_trusted_browser_answers_as_strawberry_does(both: Both, school: SchoolFixture) -> None:
    variables = {"school": school.slug, "username": "admin", "password": ADMIN_PASSWORD}
    first = await both.fast.post("/graphql", json={"query": EVERYTHING, "variables": variables})
    device = first.cookies[DEVICE_COOKIE]
    both.fast.cookies.clear()
    body, response = await both.ask(
        EVERYTHING,
        variables,
        headers={"X-Forwarded-For": new_client(), "Cookie": f"{DEVICE_COOKIE}={device}"},
    )
    assert body["data"]["login"]["errors"] == [] and DEVICE_COOKIE in response.cookies


@pytest.mark.parametrize("query", STRAWBERRYS)
async def test_what_it_does_not_know_is_left_to_strawberry(
    both: Both, query: str, school: SchoolFixture
) -> None:
    variables = {"school": school.slug, "username": "admin", "password": "wrong", "no": False}
    await both.ask(query, variables, compiled=False, headers={"X-Forwarded-For": new_client()})
    assert both.sign_in.plan(query, None) is None


async def test_bad_variables_a_token_or_a_session_cookie_are_left_to_strawberry(
    both: Both, school: SchoolFixture
) -> None:
    good = {"school": school.slug, "username": "admin", "password": "wrong"}
    for variables in [{**good, "password": None}, {**good, "username": 7}, {"school": school.slug}]:
        body, _ = await both.ask(EVERYTHING, variables, compiled=False)
        assert body["errors"], body
    body, _ = await both.ask(
        EVERYTHING, good, compiled=False, headers={"Authorization": f"Bearer {school.admin_token}"}
    )
    assert body["data"]["login"]["errors"][0]["code"] == "INVALID_CREDENTIALS"
    body, _ = await both.ask(
        EVERYTHING,
        good,
        compiled=False,
        headers={"Cookie": f"{SESSION_COOKIE}={school.admin_token}", CSRF_HEADER: "1"},
    )
    assert body["data"]["login"]["errors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_variables_with_defaults_are_coerced_as_graphql_coerces_them(
    both: Both, school: SchoolFixture
) -> None:
    query = """mutation ($school: String!, $username: String! = "admin", $password: String! = "wrong") {
      login(school: $school, username: $username, password: $password) { token errors { code } } }"""
    body, _ = await both.ask(query, {"school": school.slug}, headers={"X-Forwarded-For": new_client()})
    assert body["data"]["login"]["errors"] == [{"code": "INVALID_CREDENTIALS"}]
    body, _ = await both.ask(
        query,
        {"school": school.slug, "password": ADMIN_PASSWORD},
        headers={"X-Forwarded-For": new_client()},
    )
    assert body["data"]["login"]["errors"] == [] and body["data"]["login"]["token"]


async def test_a_nullable_variable_given_null_for_a_required_argument_is_left_to_strawberry(
    both: Both, school: SchoolFixture
) -> None:
    # given a nullable variable with a default where a String! is wanted (valid GraphQL), sent as null
    query = """mutation ($school: String = "x", $username: String!, $password: String!) {
      login(school: $school, username: $username, password: $password) { token errors { code } } }"""
    variables = {"school": None, "username": "admin", "password": ADMIN_PASSWORD}

    # then both apps answer the same GraphQL error (not a 500), from Strawberry
    body, _ = await both.ask(query, variables, compiled=False, headers={"X-Forwarded-For": new_client()})
    assert body["data"] is None and "not to be None" in body["errors"][0]["message"], body
