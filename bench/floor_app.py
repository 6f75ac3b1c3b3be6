"""The bare floor the HTTP benchmark compares Rollcall against: the same JSON, built by one hand-written SQL
statement, run over raw asyncpg in one transaction that binds the school, relayed by a bare Starlette route.

Nothing of Rollcall's own is on this path: no caller lookup, no ORM, no GraphQL, no middleware. The school
comes from the `X-Bench-School` header (or BENCH_SCHOOL_ID). A floor must never carry the costs of what it
measures, or the ratios flatter the product. The statements are written for the benchmark's queries only;
bench/roster_bench.py checks that they answer exactly what /graphql answers. Each class is looked up per
user or per membership, never joined as a whole: the planner underestimates joins between one school's
memberships and classes (its statistics do not know they come from one school) and, at 1M users, chose plans
for such joins that took ten times longer.

    uvicorn bench.floor_app:app_from_env --factory
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from db.engine import connections_kept
from db.users import UserFilter, UserOrder, UserOrderField, cursor_scope, cursor_tag
from gql.compiled_sql import cursor

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
           order by u.k0, u.k1, u.id)
    from (select id, username, first_name, surname, type, lower(surname) as k0, lower(first_name) as k1 from users
          where school_id = $1 and deleted_at is null order by lower(surname), lower(first_name), id limit 50) u),
    '[]'::json))))::text
"""

SYNC = """
with page as (
  select id, username, first_name, surname, type, lower(surname) as k0, lower(first_name) as k1 from users
  where school_id = $1 and deleted_at is null
  order by lower(surname), lower(first_name), id limit 501
), numbered as (
  select page.*, row_number() over (order by k0, k1, id) as n, count(*) over () as rows from page
), shown as (
  select s.n, s.rows, s.k0, s.k1, s.id, s.username, s.first_name, s.surname, s.type,
         coalesce(json_agg(json_build_object('name', c.name) order by c.name, c.id) filter (where c.id is not null),
                  '[]'::json) as teaching
  from numbered s
  left join class_memberships m on m.school_id = $1 and m.user_id = s.id and m.kind = 'TEACHING'
  left join lateral (select name, id from classes where school_id = $1 and id = m.class_id offset 0) c on true
  where s.n <= 500
  group by s.n, s.rows, s.k0, s.k1, s.id, s.username, s.first_name, s.surname, s.type
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
""".format(
    # the server's own cursors (their tag names the ordering and the filter), so pages compare
    cursor=cursor("shown", UserOrderField.SURNAME, f"'{cursor_tag(cursor_scope(UserOrder(), UserFilter()))}'")
)
_BIND = "select set_config('app.school_id', $1, true)"


def asyncpg_dsn(url: str) -> str:
    """The application role's URL as asyncpg takes it (no SQLAlchemy driver name)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def create_floor(dsn: str, *, pool_size: int, default_school: str | None) -> Starlette:
    pool: asyncpg.Pool | None = None

    async def one_statement(request: Request, statement: str) -> Response:
        school = request.headers.get("x-bench-school") or default_school
        if not school:
            return PlainTextResponse("Name the school in X-Bench-School.", status_code=400)
        school_id = uuid.UUID(school)
        assert pool is not None
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(_BIND, str(school_id))
            body = await connection.fetchval(statement, school_id)
        return Response(body.encode(), media_type="application/json")

    async def roster(request: Request) -> Response:
        return await one_statement(request, ROSTER)

    async def sync(request: Request) -> Response:
        return await one_statement(request, SYNC)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
        yield
        await pool.close()

    return Starlette(
        routes=[Route("/roster", roster, methods=["POST"]), Route("/sync", sync, methods=["POST"])],
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    return create_floor(
        asyncpg_dsn(os.environ["APP_DATABASE_URL"]),
        pool_size=connections_kept(int(os.environ.get("ROLLCALL_POOL_SIZE", "10"))),  # as many as a worker
        default_school=os.environ.get("BENCH_SCHOOL_ID"),
    )
