"""Finding the caller: one round trip, revocation on the very next request, and a seen-at clock that moves at
most once a minute and never makes a request wait."""

from __future__ import annotations

import asyncio
import time

import httpx
from sqlalchemy import text
from starlette.applications import Starlette

from db.api_tokens import ApiScope
from db.engine import Database
from db.scope import school_scope
from tests.conftest import SchoolFixture, counting_statements, graphql, make_api_token, make_user, sign_in_as

ROSTER = "{ users(first: 5) { totalCount edges { node { username } } } }"  # the compiled path
ME = "{ me { username } }"  # the general path
TYPENAME = "{ __typename }"
LOGOUT = "mutation { logout { errors { code } } }"
DELETE = "mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code } } }"
REVOKE = "mutation ($id: ID!) { revokeApiToken(id: $id) { errors { code } } }"
TOKENS = "{ apiTokens { id } }"
SEEN = "select last_seen_at from sessions where token_hash = sha256(convert_to(:t, 'utf8'))"


def refused(body: dict[str, object]) -> bool:
    errors = body.get("errors")
    return isinstance(errors, list) and errors[0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_logout_ends_the_session_on_the_next_request_on_both_paths(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    # given a session that reads the roster
    assert (await graphql(http, ROSTER, token=school.admin_token))["data"]["users"]["totalCount"] == 1
    # when it logs out
    assert (await graphql(http, LOGOUT, token=school.admin_token))["data"]["logout"]["errors"] == []
    # then the very next request, compiled or not, is refused
    assert refused(await graphql(http, ROSTER, token=school.admin_token))
    assert (await graphql(http, ME, token=school.admin_token))["data"]["me"] is None


async def test_a_deleted_user_loses_access_on_the_next_request(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    teacher = await make_user(db, school, type="TEACHER", is_admin=True)
    token = await sign_in_as(db, school, teacher)
    assert (await graphql(http, ROSTER, token=token))["data"]["users"]["totalCount"] == 2
    assert (await graphql(http, DELETE, {"ids": [str(teacher)]}, token=school.admin_token))["data"][
        "deleteUsers"
    ]["errors"] == []
    assert refused(await graphql(http, ROSTER, token=token))
    assert (await graphql(http, ME, token=token))["data"]["me"] is None


async def test_a_revoked_api_token_is_refused_on_the_next_request(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    secret = await make_api_token(db, school, [ApiScope.ROSTER_READ])
    assert (await graphql(http, ROSTER, token=secret))["data"]["users"]["totalCount"] == 1
    token_id = (await graphql(http, TOKENS, token=school.admin_token))["data"]["apiTokens"][0]["id"]
    assert (await graphql(http, REVOKE, {"id": token_id}, token=school.admin_token))["data"][
        "revokeApiToken"
    ]["errors"] == []
    assert refused(await graphql(http, ROSTER, token=secret))


async def test_the_roster_page_takes_two_statements_the_caller_and_the_read(
    http: httpx.AsyncClient, app: Starlette, school: SchoolFixture
) -> None:
    await graphql(http, ROSTER, token=school.admin_token)  # its seen-at clock has just moved
    with counting_statements(app.state.db.engine) as statements:
        await graphql(http, ROSTER, token=school.admin_token)
    assert len(statements) == 2 and "rollcall_caller(" in statements[0], statements


async def test_typename_with_a_token_is_two_statements_too(
    http: httpx.AsyncClient, app: Starlette, school: SchoolFixture
) -> None:
    await graphql(http, TYPENAME, token=school.admin_token)
    with counting_statements(app.state.db.engine) as statements:
        body = await graphql(http, TYPENAME, token=school.admin_token)
    assert body == {"data": {"__typename": "Query"}}
    assert len(statements) == 2 and "rollcall_caller(" in statements[0], statements


async def test_seen_at_moves_at_most_once_a_minute(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    token = await sign_in_as(db, school, school.admin_id)
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "update sessions set last_seen_at = now() - interval '2 minutes' "
                "where token_hash = sha256(convert_to(:t, 'utf8'))"
            ),
            {"t": token},
        )
        stale = (await session.execute(text(SEEN), {"t": token})).scalar_one()
    await graphql(http, ME, token=token)
    async with school_scope(db, school.id) as session:
        touched = (await session.execute(text(SEEN), {"t": token})).scalar_one()
    assert touched > stale
    await graphql(http, ROSTER, token=token)
    async with school_scope(db, school.id) as session:
        assert (await session.execute(text(SEEN), {"t": token})).scalar_one() == touched


async def test_a_locked_session_row_never_makes_a_request_wait(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a session due for its seen-at touch, whose row another transaction holds locked
    token = await sign_in_as(db, school, school.admin_id)
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "update sessions set last_seen_at = now() - interval '2 minutes' "
                "where token_hash = sha256(convert_to(:t, 'utf8'))"
            ),
            {"t": token},
        )
    async with school_scope(db, school.id) as holder:
        await holder.execute(
            text("select 1 from sessions where token_hash = sha256(convert_to(:t, 'utf8')) for update"),
            {"t": token},
        )
        # when it asks, on both paths, then it is answered at once (the touch is skipped, not waited for)
        started = time.monotonic()
        answers = await asyncio.wait_for(
            asyncio.gather(graphql(http, ME, token=token), graphql(http, ROSTER, token=token)), timeout=10
        )
        assert time.monotonic() - started < 5
    assert answers[0]["data"]["me"] == {"username": "admin"}
    assert answers[1]["data"]["users"]["totalCount"] == 1
