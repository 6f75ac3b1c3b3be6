"""The request path's shared checkouts: the caller is found in the transaction the request's first work then
runs in, on the Strawberry path and on SCIM; a lookup that moved the seen-at clock holds no lock afterwards;
parsed and validated documents are reused without changing any answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.applications import Starlette

from db.api_tokens import ApiScope
from db.engine import Database
from db.models import Provider
from db.scope import school_scope
from db.sessions import SessionPolicy
from tenants.callers import caller_and_transaction
from tests.conftest import (
    POLICY,
    SchoolFixture,
    counting_statements,
    graphql,
    make_api_token,
    make_school,
    sign_in_as,
)

ME = "{ me { username } }"
SEEN = "select last_seen_at from sessions where token_hash = sha256(convert_to(:t, 'utf8'))"
STALE = (
    "update sessions set last_seen_at = now() - interval '2 minutes' "
    "where token_hash = sha256(convert_to(:t, 'utf8'))"
)


@contextmanager
def counting_checkouts(engine: AsyncEngine) -> Iterator[list[object]]:
    """Every connection the engine's pool hands out inside the block."""
    checkouts: list[object] = []

    def count(connection: object, record: object, proxy: object) -> None:
        checkouts.append(connection)

    event.listen(engine.sync_engine, "checkout", count)
    try:
        yield checkouts
    finally:
        event.remove(engine.sync_engine, "checkout", count)


async def test_me_on_the_strawberry_path_takes_one_checkout(
    strawberry_http: httpx.AsyncClient, strawberry_app: Starlette, school: SchoolFixture
) -> None:
    await graphql(strawberry_http, ME, token=school.admin_token)  # its seen-at clock has just moved
    engine = strawberry_app.state.db.engine
    with counting_checkouts(engine) as checkouts, counting_statements(engine) as statements:
        body = await graphql(strawberry_http, ME, token=school.admin_token)
    assert body == {"data": {"me": {"username": "admin"}}}
    # the caller's lookup binds the school: the read follows in its transaction, with no bind of its own
    assert len(checkouts) == 1, statements
    assert len(statements) == 2 and "rollcall_caller(" in statements[0], statements


async def test_a_scim_page_takes_one_checkout(
    http: httpx.AsyncClient, app: Starlette, owner_engine: AsyncEngine, db: Database
) -> None:
    school = await make_school(owner_engine, db, provider=Provider.C2K)
    token = await make_api_token(db, school, [ApiScope.PROVISION])
    headers = {"Authorization": f"Bearer {token}"}
    assert (await http.get("/scim/v2/Users", headers=headers)).status_code == 200  # clock moved
    with counting_checkouts(app.state.db.engine) as checkouts:
        response = await http.get("/scim/v2/Users", headers=headers)
    assert response.status_code == 200, response.text
    # the token, the school's provider and the page, in one transaction
    assert len(checkouts) == 1


async def test_a_token_refused_on_scim_leaves_no_transaction_open(
    http: httpx.AsyncClient, app: Starlette, school: SchoolFixture, db: Database
) -> None:
    token = await make_api_token(db, school, [ApiScope.ROSTER_READ])
    for _ in range(3):
        response = await http.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, response.text
    assert app.state.db.engine.sync_engine.pool.checkedout() == 0


async def _locks_nothing(db: Database, school: SchoolFixture, token: str) -> None:
    """Another transaction can write the caller's session row at once."""
    async with school_scope(db, school.id) as other:
        await other.execute(text("set local lock_timeout = '2s'"))
        await other.execute(
            text(
                "update sessions set reauth_failures = reauth_failures "
                "where token_hash = sha256(convert_to(:t, 'utf8'))"
            ),
            {"t": token},
        )


async def _stale(db: Database, school: SchoolFixture, token: str) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(text(STALE), {"t": token})


async def _seen(session: AsyncSession, token: str) -> object:
    return (await session.execute(text(SEEN), {"t": token})).scalar_one()


async def test_a_lookup_that_moved_the_clock_commits_at_once_and_holds_no_lock(
    db: Database, school: SchoolFixture
) -> None:
    token = await sign_in_as(db, school, school.admin_id)
    await _stale(db, school, token)
    policy: SessionPolicy = POLICY
    caller, transaction = await caller_and_transaction(db, token, policy)
    try:
        assert caller is not None and caller.school_id == school.id
        # the clock moved, committed already: seen from another transaction while this request works
        assert transaction is None
        async with school_scope(db, school.id) as session:
            moved = await _seen(session, token)
        await _locks_nothing(db, school, token)
    finally:
        if transaction is not None:
            await transaction.close()
    # and the next lookup, with the clock fresh, keeps its transaction open, still holding no lock
    caller, transaction = await caller_and_transaction(db, token, policy)
    assert caller is not None and transaction is not None
    try:
        assert await _seen(transaction, token) == moved  # the school is bound in it
        await _locks_nothing(db, school, token)
    finally:
        await transaction.close()


async def test_a_logout_on_the_strawberry_path_ends_the_session_at_once(
    strawberry_http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    token = await sign_in_as(db, school, school.admin_id)
    await graphql(strawberry_http, ME, token=token)
    logout = "mutation { logout { errors { code } } }"
    assert (await graphql(strawberry_http, logout, token=token))["data"]["logout"]["errors"] == []
    # the next request has no caller: `me` is nobody, and a field for signed-in people refuses
    assert await graphql(strawberry_http, ME, token=token) == {"data": {"me": None}}
    refused = await graphql(strawberry_http, "{ school { slug } }", token=token)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_refused_document_is_refused_again_and_a_good_one_answered_again(
    strawberry_http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    bad = "{ me { username nosuchfield } }"
    deep = (
        "{ me { " + "registrationClass { members { edges { node { " * 4 + "username" + " } } } }" * 4 + " } }"
    )
    answers = []
    for _ in range(3):
        answers.append(
            (
                await graphql(strawberry_http, bad, token=school.admin_token),
                await graphql(strawberry_http, deep, token=school.admin_token),
                await graphql(strawberry_http, ME, token=school.admin_token),
            )
        )
    invalid, too_deep, me = answers[0]
    assert "nosuchfield" in invalid["errors"][0]["message"] and not invalid.get("data"), invalid
    assert "depth" in too_deep["errors"][0]["message"] and not too_deep.get("data"), too_deep
    assert me == {"data": {"me": {"username": "admin"}}}
    assert answers[1] == answers[0] and answers[2] == answers[0]
