"""The floor the roster benchmark compares GraphQL against: the same JSON, built by one hand-written SQL
statement and relayed by a bare Starlette route, on the same pool and settings as the real server.

The routes do what any roster endpoint must (find who is asking from the bearer token, as the server does;
bind their school; one statement) and nothing more: no GraphQL, no validation, no permission classes. The
statements are written for the benchmark's queries only; bench/roster_bench.py checks that they answer
exactly what /graphql answers. Each class is looked up per user or per membership, never joined as a whole:
the planner underestimates joins between one school's memberships and classes (its statistics do not know
they come from one school) and, at 1M users, chose plans for such joins that took ten times longer. `/roster/unauthenticated` skips even the caller lookup (for the school in
BENCH_SCHOOL_ID), to show what that lookup costs.

    uvicorn bench.floor_app:app_from_env --factory
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from db.engine import Database
from db.pagination import decode_cursor
from db.roster_sql import cursor
from db.sessions import SessionPolicy
from db.settings import Settings
from db.users import UserOrderField
from gql.http_auth import request_caller
from tenants.scope import school_scope

ROSTER = """
select json_build_object('data', json_build_object('users', json_build_object(
  'totalCount', (select count(*) from users where school_id = $1 and deleted_at is null),
  'edges', coalesce((
    select json_agg(json_build_object('node', json_build_object(
             'id', u.id, 'username', u.username, 'firstName', u.first_name, 'surname', u.surname, 'type', u.type,
             'registrationClass', (select json_build_object('name', c.name)
                                   from class_memberships m join classes c on c.school_id = m.school_id
                                                                         and c.id = m.class_id
                                   where m.school_id = $1 and m.user_id = u.id and m.kind = 'REGISTRATION')))
           order by u.k, u.id)
    from (select id, username, first_name, surname, type, lower(surname) as k from users
          where school_id = $1 and deleted_at is null order by lower(surname), id limit 50) u), '[]'::json))))::text
"""

SYNC = """
with page as (
  select id, username, first_name, surname, type, lower(surname) as k from users
  where school_id = $1 and deleted_at is null {after}
  order by lower(surname), id limit 501
), numbered as (
  select page.*, row_number() over (order by k, id) as n, count(*) over () as rows from page
), shown as (
  select s.n, s.rows, s.k, s.id, s.username, s.first_name, s.surname, s.type,
         coalesce(json_agg(json_build_object('name', c.name) order by c.name, c.id) filter (where c.id is not null),
                  '[]'::json) as teaching
  from numbered s
  left join class_memberships m on m.school_id = $1 and m.user_id = s.id and m.kind = 'TEACHING'
  left join lateral (select name, id from classes where school_id = $1 and id = m.class_id offset 0) c on true
  where s.n <= 500
  group by s.n, s.rows, s.k, s.id, s.username, s.first_name, s.surname, s.type
)
select json_build_object('data', json_build_object('users', json_build_object(
  'pageInfo', json_build_object(
    'hasNextPage', (select count(*) > 500 from page),
    'endCursor', (select {cursor} from shown where n = least(rows, 500))),
  'edges', coalesce((
    select json_agg(json_build_object('node', json_build_object(
             'id', id, 'username', username, 'firstName', first_name, 'surname', surname, 'type', type,
             'teachingClasses', teaching)) order by n)
    from shown), '[]'::json))))::text
"""
# Cursors in the server's own format (JSON escaped as Python escapes it), so the pages can be compared.
CURSOR = cursor("shown", UserOrderField.SURNAME)
SYNC_FIRST = SYNC.format(after="", cursor=CURSOR)
SYNC_AFTER = SYNC.format(after="and (lower(surname), id) > ($2::text, $3::uuid)", cursor=CURSOR)


def create_floor(settings: Settings, app_database_url: str) -> Starlette:
    db = Database(app_database_url, pool_size=settings.pool_size)
    policy = SessionPolicy(idle=timedelta(minutes=settings.session_idle_minutes),
                           lifetime=timedelta(hours=settings.session_lifetime_hours))
    unauthenticated_school = os.environ.get("BENCH_SCHOOL_ID")

    async def one_statement(school_id: uuid.UUID, statement: str, *params: object) -> Response:
        async with school_scope(db, school_id) as session:
            connection = await session.connection()
            body = (await connection.exec_driver_sql(statement, (school_id, *params))).scalar_one()
        return Response(body.encode(), media_type="application/json")

    async def roster(request: Request) -> Response:
        caller = await request_caller(request, db, policy)
        if caller is None:
            return PlainTextResponse("Sign in first.", status_code=401)
        return await one_statement(caller.school_id, ROSTER)

    async def roster_unauthenticated(request: Request) -> Response:
        assert unauthenticated_school, "BENCH_SCHOOL_ID names the school"
        return await one_statement(uuid.UUID(unauthenticated_school), ROSTER)

    async def sync(request: Request) -> Response:
        caller = await request_caller(request, db, policy)
        if caller is None:
            return PlainTextResponse("Sign in first.", status_code=401)
        after = (await request.json()).get("after")
        if after is None:
            return await one_statement(caller.school_id, SYNC_FIRST)
        value, last_id = decode_cursor(after, parse=(str, uuid.UUID))
        return await one_statement(caller.school_id, SYNC_AFTER, value, last_id)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await db.dispose()

    return Starlette(routes=[
        Route("/roster", roster, methods=["POST"]),
        Route("/roster/unauthenticated", roster_unauthenticated, methods=["POST"]),
        Route("/sync", sync, methods=["POST"]),
    ], lifespan=lifespan)


def app_from_env() -> Starlette:
    settings = Settings.from_env()
    assert settings.app_database_url
    return create_floor(settings, settings.app_database_url)
