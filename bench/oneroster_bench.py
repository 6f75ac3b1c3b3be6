"""OneRoster's users list beside the same rows from GraphQL's compiled path, over HTTP, in one run.

One school of 10,000 users (pupils and teachers) on a throwaway embedded PostgreSQL; the app served in this
process (httpx's ASGI transport: the whole request path, without the network). Each round reads the whole
school both ways, in turns, the order swapped every round so drift weighs on both alike:

- OneRoster: `GET /ims/oneroster/rostering/v1p2/users?limit=1000&offset=N` with an OAuth access token;
- GraphQL's compiled path: `users(first: 500, after: ...)` (its largest page) with the same fields (id,
  username, names, email, type), signed in as the school's admin: two of its pages are one of OneRoster's;

and, separately, one OneRoster page of 10,000 (what consumers ask for at once). Both are given as pages of
1,000 users per second (rows read / 1,000 / seconds), medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.harness import bench_database, save, table
from db.api_tokens import ApiScope, create_api_token
from db.audit import Actor
from db.embedded import DatabaseUrls
from db.schools import create_school
from db.scope import school_scope
from db.sessions import SessionPolicy, start_session
from web.app import create_app
from web.settings import Settings

USERS = 10_000
PAGE = 1_000
BASE = "/ims/oneroster/rostering/v1p2"
QUERY = """
query ($after: String) {
  users(first: 500, after: $after) {
    edges { node { id username firstName surname email type } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def oneroster_pages(http: httpx.AsyncClient, token: str) -> int:
    headers, pages = {"Authorization": f"Bearer {token}"}, 0
    for offset in range(0, USERS + 1, PAGE):
        response = await http.get(f"{BASE}/users", params={"limit": PAGE, "offset": offset}, headers=headers)
        assert response.status_code == 200, response.text
        pages += 1
        if len(response.json()["users"]) < PAGE:
            return pages
    return pages


async def graphql_pages(http: httpx.AsyncClient, token: str) -> int:
    headers, after, pages = {"Authorization": f"Bearer {token}"}, None, 0
    while True:
        response = await http.post(
            "/graphql", json={"query": QUERY, "variables": {"after": after}}, headers=headers
        )
        assert response.status_code == 200 and "errors" not in response.json(), response.text
        pages += 1
        found = response.json()["data"]["users"]
        if not found["pageInfo"]["hasNextPage"]:
            return pages
        after = found["pageInfo"]["endCursor"]


async def main(full: bool) -> dict[str, Any]:
    rounds = 10 if full else 4
    async with bench_database() as bench:
        async with async_sessionmaker(bench.owner)() as session, session.begin():
            school = await create_school(
                session,
                slug="oneroster-bench",
                name="Bench",
                admin_username="admin",
                admin_password="bench-pw-2026",
            )
        async with school_scope(bench.db, school.school_id, Actor(id=None, label="bench")) as session:
            await session.execute(
                text(
                    "insert into users (school_id, username, first_name, surname, type, password_hash, email) "
                    "select :s, 'u' || n, 'First' || n, 'Surname' || n, "
                    "case when n % 20 = 0 then 'TEACHER' else 'PUPIL' end, 'x', "
                    "case when n % 20 = 0 then 't' || n || '@example.org' end "
                    "from generate_series(1, :n) n"
                ),
                {"s": school.school_id, "n": USERS - 1},
            )
            admin, _ = await start_session(
                session,
                school_id=school.school_id,
                user_id=school.admin_id,
                policy=SessionPolicy(idle=timedelta(hours=8), lifetime=timedelta(hours=12)),
            )
            secret, client = await create_api_token(
                session,
                school_id=school.school_id,
                actor=Actor(id=school.admin_id, label="admin"),
                name="bench",
                scopes=[ApiScope.ROSTER_READ],
            )
        urls: DatabaseUrls = bench.server.urls()
        with tempfile.TemporaryDirectory() as data:
            settings = Settings(
                data_dir=Path(data),
                database_url=None,
                app_database_url=None,
                production=False,
                graphiql=False,
                introspection=False,
                pool_size=5,
                session_idle_minutes=600,
                session_lifetime_hours=12,
                login_code_secret=uuid.uuid4().bytes * 2,
            )
            app = create_app(settings, urls)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                exchanged = await http.post(
                    "/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": str(client.id),
                        "client_secret": secret,
                    },
                )
                token = exchanged.json()["access_token"]
                rates: dict[str, list[float]] = {"oneroster": [], "graphql": []}
                for turn in range(rounds):
                    order = ("oneroster", "graphql") if turn % 2 == 0 else ("graphql", "oneroster")
                    for name in order:
                        started = time.perf_counter()
                        await (
                            oneroster_pages(http, token)
                            if name == "oneroster"
                            else graphql_pages(http, admin)
                        )
                        rates[name].append(USERS / PAGE / (time.perf_counter() - started))
                whole: list[float] = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    response = await http.get(
                        f"{BASE}/users",
                        params={"limit": 10_000},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert response.status_code == 200 and len(response.json()["users"]) == USERS
                    whole.append(time.perf_counter() - started)
            await app.state.db.dispose()
    oneroster, graphql = statistics.median(rates["oneroster"]), statistics.median(rates["graphql"])
    return {
        "oneroster users limit=1000 pages/s": round(oneroster, 1),
        "oneroster beside: graphql compiled users, 1000-row pages/s": round(graphql, 1),
        "oneroster users limit=10000 one page ms": round(statistics.median(whole) * 1000, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    results = asyncio.run(main(parser.parse_args().full))
    save(results)
    print(table([(key, str(value)) for key, value in results.items()]))
