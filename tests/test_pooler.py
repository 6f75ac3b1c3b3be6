"""Past one machine, as deployed: Rollcall behind PgBouncer in transaction mode, with fewer server connections
than clients, and two `rollcall serve` processes on one database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import ApiScope
from db.embedded import OWNER_ROLE, DatabaseUrls, EmbeddedServer
from db.engine import Database
from db.models import Provider, User
from db.scope import school_scope
from tests.conftest import (
    ADMIN_PASSWORD,
    SchoolFixture,
    free_port,
    graphql,
    make_api_token,
    make_school,
    make_user,
    serving,
)
from tests.pgbouncer import PgBouncer, pgbouncer
from tests.test_cli import ROLLCALL, rollcall
from web.app import create_app
from web.settings import Settings

pytestmark = pytest.mark.slow

POOL = 3  # server connections PgBouncer may open: far fewer than the clients below
SCHOOLS = 4
PUPILS = 6
IMPORTED = 70
READERS_PER_SCHOOL = 2

LOGIN = (
    "mutation ($s: String!, $u: String!, $p: String!) { login(school: $s, username: $u, password: $p) "
    "{ token errors { code } } }"
)
USERS = (
    "{ users(first: 500) { totalCount edges { node { id username surname version "
    "registrationClass { name } teachingClasses { name } } } } }"
)
CLASSES = "{ classes { id name memberCount members(first: 100) { edges { node { id username } } } } }"
EDIT = (
    "mutation ($id: ID!, $v: Int!, $value: String!) { updateUserField(userId: $id, expectedVersion: $v, "
    "field: SURNAME, value: $value) { user { id surname } errors { code } } }"
)
CREATE_CLASS = (
    "mutation ($name: String!) { createClass(kind: REGISTRATION, name: $name) "
    "{ schoolClass { id name } errors { code } } }"
)
ASSIGN = (
    "mutation ($c: ID!, $ids: [ID!]!) { assignClass(classId: $c, userIds: $ids) "
    "{ schoolClass { name memberCount } errors { code } } }"
)
UPLOAD = "mutation ($file: Upload!) { bulkImport(file: $file) { job { id total } errors { code } } }"
CONFIRM = (
    "mutation ($id: ID!, $p: String!) { confirmImport(jobId: $id, currentPassword: $p) "
    "{ job { status processed total } errors { code message } } }"
)
JOB = "query ($id: ID!) { importJob(id: $id) { status processed total } }"
FEED_CURSOR = "{ changesCursor }"
FEED = (
    "query ($after: String) { changes(after: $after, first: 1000) { edges { node { kind operation userId "
    "classId user { username } schoolClass { name } } } pageInfo { hasNextPage endCursor } } }"
)
SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def bouncer(migrated: EmbeddedServer) -> Iterator[PgBouncer]:
    with pgbouncer(migrated, pool_size=POOL) as running:
        yield running


@dataclass
class Seen:
    """What one school's clients were shown, to hold against the database at the end."""

    tag: str
    school: SchoolFixture
    user_ids: set[str] = field(default_factory=set)
    responses: int = 0

    def own(self, body: dict[str, Any]) -> None:
        """Every user and class in a response is this school's: its names carry the school's tag."""
        assert "errors" not in body, body
        self.responses += 1
        text = json.dumps(body)
        for other in ("tag-a", "tag-b", "tag-c", "tag-d", "tag-m"):
            if other != self.tag:
                assert other not in text, f"{self.tag} was shown {other}'s rows: {text[:300]}"
        for edge in body["data"].get("users", {}).get("edges", []):
            node = edge["node"]
            assert node["username"] == "admin" or node["username"].startswith(f"{self.tag}-"), node
            self.user_ids.add(node["id"])
        for school_class in body["data"].get("classes", []):
            assert school_class["name"].startswith(self.tag), school_class
            self.user_ids.update(edge["node"]["id"] for edge in school_class["members"]["edges"])


async def upload(http: httpx.AsyncClient, token: str, data: bytes) -> dict[str, Any]:
    response = await http.post(
        "/graphql",
        headers={"Authorization": f"Bearer {token}"},
        data={
            "operations": json.dumps({"query": UPLOAD, "variables": {"file": None}}),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": ("roster.csv", data, "text/csv")},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["data"]["bulkImport"]["errors"] == [], body
    return body


async def school_day(seen: Seen, compiled: httpx.AsyncClient, strawberry: httpx.AsyncClient) -> None:
    """One school's admin at work through the pooled servers: sign-in, both read paths, an inline edit, a
    class move and a bulk import followed on its progress."""
    tag, school = seen.tag, seen.school
    signed_in = await graphql(compiled, LOGIN, {"s": school.slug, "u": "admin", "p": ADMIN_PASSWORD})
    assert signed_in["data"]["login"]["errors"] == [], signed_in
    token = signed_in["data"]["login"]["token"]
    # a roster app's place in the change feed, taken before the day's work
    cursor = (await graphql(compiled, FEED_CURSOR, token=token))["data"]["changesCursor"]

    users = await graphql(compiled, USERS, token=token)
    seen.own(users)
    also = await graphql(strawberry, USERS, token=token)
    seen.own(also)
    assert also == users  # the two read paths agree, each on its own pooled connection
    assert users["data"]["users"]["totalCount"] == PUPILS + 1
    pupils = [e["node"] for e in users["data"]["users"]["edges"] if e["node"]["username"] != "admin"]

    # an inline edit
    first = pupils[0]
    edited = await graphql(
        compiled, EDIT, {"id": first["id"], "v": first["version"], "value": f"{tag}-Edited"}, token
    )
    assert edited["data"]["updateUserField"] == {
        "user": {"id": first["id"], "surname": f"{tag}-Edited"},
        "errors": [],
    }

    # a class move: everyone into 7A, then one pupil on to 7B
    made = [
        (await graphql(compiled, CREATE_CLASS, {"name": f"{tag} {name}"}, token))["data"]["createClass"]
        for name in ("7A", "7B")
    ]
    assert all(m["errors"] == [] for m in made), made
    seven_a, seven_b = (m["schoolClass"]["id"] for m in made)
    moved = await graphql(compiled, ASSIGN, {"c": seven_a, "ids": [p["id"] for p in pupils]}, token)
    assert moved["data"]["assignClass"]["schoolClass"]["memberCount"] == PUPILS
    moved = await graphql(compiled, ASSIGN, {"c": seven_b, "ids": [first["id"]]}, token)
    assert moved["data"]["assignClass"] == {
        "schoolClass": {"name": f"{tag} 7B", "memberCount": 1},
        "errors": [],
    }
    for client in (compiled, strawberry):
        classes = await graphql(client, CLASSES, token=token)
        seen.own(classes)
        counts = {c["name"]: c["memberCount"] for c in classes["data"]["classes"]}
        assert counts == {f"{tag} 7A": PUPILS - 1, f"{tag} 7B": 1}

    # a bulk import, confirmed while its progress is read on the other server
    roster = "username,type\r\n" + "".join(f"{tag}-i{n:03},PUPIL\r\n" for n in range(IMPORTED))
    job = (await upload(compiled, token, roster.encode()))["data"]["bulkImport"]["job"]
    applied = (await graphql(compiled, CONFIRM, {"id": job["id"], "p": ADMIN_PASSWORD}, token))["data"][
        "confirmImport"
    ]
    assert applied == {"job": {"status": "RUNNING", "processed": 0, "total": IMPORTED}, "errors": []}
    progress: list[int] = []
    while True:
        state = (await graphql(strawberry, JOB, {"id": job["id"]}, token))["data"]["importJob"]
        progress.append(state["processed"])
        if state["status"] != "RUNNING":
            break
        await asyncio.sleep(0.05)
    assert state["status"] == "SUCCEEDED"
    assert progress == sorted(progress) and progress[-1] == IMPORTED
    for client in (compiled, strawberry):
        after = await graphql(client, USERS, token=token)
        seen.own(after)
        assert after["data"]["users"]["totalCount"] == PUPILS + 1 + IMPORTED

    # the change feed, followed through the pooler, tells this school's day and nothing of another's
    feed = await graphql(compiled, FEED, {"after": cursor}, token)
    seen.own(feed)
    changes = [edge["node"] for edge in feed["data"]["changes"]["edges"]]
    assert not feed["data"]["changes"]["pageInfo"]["hasNextPage"]
    everyone = {edge["node"]["id"] for edge in after["data"]["users"]["edges"]}
    assert {c["userId"] for c in changes if c["userId"]} == {first["id"]} | {
        edge["node"]["id"] for edge in after["data"]["users"]["edges"] if "-i" in edge["node"]["username"]
    } | {p["id"] for p in pupils}
    assert {c["userId"] for c in changes if c["userId"]} <= everyone
    assert {c["classId"] for c in changes if c["classId"]} == {seven_a, seven_b}


async def keep_reading(seen: Seen, client: httpx.AsyncClient, token: str, stop: asyncio.Event) -> None:
    """A teacher's screen refreshing the users table and the classes, over and over, meanwhile."""
    while not stop.is_set():
        for query in (USERS, CLASSES):
            seen.own(await graphql(client, query, token=token))


async def provisioning(seen: Seen, compiled: httpx.AsyncClient, token: str) -> None:
    """A provider creating users over SCIM and reading them back, among the other schools' traffic."""
    headers = {"Authorization": f"Bearer {token}"}
    for n in range(8):
        created = await compiled.post(
            "/scim/v2/Users",
            json={"schemas": [SCIM_USER], "userName": f"{seen.tag}-s{n}", "userType": "Pupil"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        seen.user_ids.add(created.json()["id"])
        listed = await compiled.get("/scim/v2/Users", params={"count": 100}, headers=headers)
        assert listed.status_code == 200, listed.text
        names = [r["userName"] for r in listed.json()["Resources"]]
        assert names and all(name.startswith(f"{seen.tag}-") for name in names), names
        assert len(names) == n + 1
        seen.user_ids.update(r["id"] for r in listed.json()["Resources"])
        seen.responses += 2


@pytest.fixture
async def pooled_clients(
    bouncer: PgBouncer, migrated: EmbeddedServer, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Rollcall with ROLLCALL_DB_POOLER=pgbouncer, its application role through PgBouncer: once with compiled
    reads, once with every read through Strawberry."""
    urls = DatabaseUrls(owner=migrated.urls().owner, app=bouncer.app_url())
    pooled = replace(settings, db_pooler="pgbouncer", pool_size=4)
    compiled_app = create_app(pooled, urls)
    strawberry_app = create_app(replace(pooled, compiled_reads=False), urls)
    async with (
        serving(compiled_app) as compiled_url,
        serving(strawberry_app) as strawberry_url,
        httpx.AsyncClient(base_url=compiled_url, timeout=60) as compiled,
        httpx.AsyncClient(base_url=strawberry_url, timeout=60) as strawberry,
    ):
        yield compiled, strawberry


async def test_behind_pgbouncer_every_request_works_and_sees_only_its_own_school(
    bouncer: PgBouncer,
    pooled_clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    owner_engine: AsyncEngine,
    db: Database,
) -> None:
    compiled, strawberry = pooled_clients
    tags = ["tag-a", "tag-b", "tag-c", "tag-d"][:SCHOOLS]
    schools: list[Seen] = []
    for tag in tags:
        school = await make_school(
            owner_engine, db, slug=f"{tag}-{uuid.uuid4().hex[:8]}", name=f"{tag} School"
        )
        for n in range(PUPILS):
            await make_user(db, school, username=f"{tag}-p{n}", surname=f"{tag}-Surname")
        schools.append(Seen(tag, school))
    managed = await make_school(owner_engine, db, slug=f"tag-m-{uuid.uuid4().hex[:8]}", provider=Provider.C2K)
    provider = Seen("tag-m", managed)
    provision_token = await make_api_token(db, managed, [ApiScope.PROVISION])

    # given every school busy at once, through PgBouncer's 3 server connections
    stop = asyncio.Event()
    readers = [
        asyncio.create_task(keep_reading(seen, client, seen.school.admin_token, stop))
        for seen in schools
        for client in (compiled, strawberry)[:READERS_PER_SCHOOL]
    ]
    try:
        await asyncio.gather(
            *(school_day(seen, compiled, strawberry) for seen in schools),
            provisioning(provider, compiled, provision_token),
        )
    finally:
        stop.set()
        await asyncio.gather(*readers)

    # then connections were truly shared: many client connections, at most POOL servers, many transactions
    clients = [c for c in bouncer.admin("SHOW CLIENTS") if c["user"] == "rollcall_app"]
    servers = [s for s in bouncer.admin("SHOW SERVERS") if s["user"] == "rollcall_app"]
    assert len(clients) > POOL >= len(servers) > 0
    stats = {row["database"]: row for row in bouncer.admin("SHOW STATS")}
    assert int(stats["rollcall"]["total_xact_count"]) > 50 * POOL

    # and every id each school was shown is that school's, as the database says
    for seen in [*schools, provider]:
        assert seen.responses > 3
        async with school_scope(db, seen.school.id) as session:
            ids = {str(i) for i in (await session.execute(select(User.id))).scalars()}
        assert seen.user_ids and seen.user_ids <= ids, seen.tag
    await server_connections_are_clean(bouncer)


async def server_connections_are_clean(bouncer: PgBouncer) -> None:
    """Every server connection PgBouncer holds carries nothing from the requests it served: no prepared
    statement, no school bound, no LISTEN, no advisory lock, no temporary table, no setting changed for the
    session (asyncpg turns `jit` off and back on around its look-up of a type it has no codec for, uuid[],
    inside the request's transaction: the value is as it was). POOL transactions at once take all POOL
    server connections, one each."""
    connections = [
        await asyncpg.connect(bouncer.app_url().replace("+asyncpg", ""), statement_cache_size=0)
        for _ in range(POOL)
    ]
    try:
        transactions = [c.transaction() for c in connections]
        for transaction in transactions:
            await transaction.start()
        states = [
            await c.fetchrow(
                """select pg_backend_pid() as pid,
                       (select count(*) from pg_prepared_statements) as prepared,
                       coalesce(current_setting('app.school_id', true), '') as school,
                       (select count(*) from pg_listening_channels()) as listening,
                       (select count(*) from pg_locks where locktype = 'advisory'
                          and pid = pg_backend_pid()) as advisory,
                       (select count(*) from pg_class where relnamespace = pg_my_temp_schema()) as temporary,
                       (select array_agg(name) from pg_settings
                          where source = 'session' and setting is distinct from reset_val) as changed_settings"""
            )
            for c in connections
        ]
        for transaction in transactions:
            await transaction.rollback()
    finally:
        for c in connections:
            await c.close()
    assert len({s["pid"] for s in states}) == POOL
    for state in states:
        assert dict(state) | {"pid": 0} == {
            "pid": 0,
            "prepared": 0,
            "school": "",
            "listening": 0,
            "advisory": 0,
            "temporary": 0,
            "changed_settings": None,
        }


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]


def start_server(env: dict[str, str], log: Path) -> Server:
    """`rollcall serve` with two workers, as an operator starts it, until it answers."""
    port = free_port()
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [ROLLCALL, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return Server(url, process)
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()
            process.wait(timeout=30)
            raise AssertionError(log.read_text())
        time.sleep(0.1)


def operation_count(metrics: str, operation: str) -> float:
    """How many times /metrics says the operation ran."""
    found = re.search(
        rf'^rollcall_graphql_operation_seconds_count\{{operation="{operation}",type="query"\}} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


async def test_two_servers_on_one_database_behave_as_one(
    migrated: EmbeddedServer, bouncer: PgBouncer, tmp_path: Path
) -> None:
    # given a new database, and two servers started at once on it (each applying the migrations at start-up),
    # through one PgBouncer, sharing one data directory and one secret key, as two units on one machine may
    database = f"two_{uuid.uuid4().hex[:10]}"
    migrated.psql(f"CREATE DATABASE {database} OWNER {OWNER_ROLE}")
    env = {
        **os.environ,
        "DATABASE_URL": migrated.url(OWNER_ROLE, database),
        "APP_DATABASE_URL": bouncer.app_url(database),
        "ROLLCALL_DB_POOLER": "pgbouncer",
        "ROLLCALL_POOL_SIZE": "3",
        "ROLLCALL_DATA_DIR": str(tmp_path / "data"),
        "ROLLCALL_SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
    }
    log = tmp_path / "servers.log"
    started = await asyncio.gather(
        asyncio.to_thread(start_server, env, log),
        asyncio.to_thread(start_server, env, log),
        return_exceptions=True,
    )
    servers = [s for s in started if isinstance(s, Server)]
    try:
        assert len(servers) == 2, started  # both started, each past its migrations
        one, other = servers
        created = await asyncio.to_thread(
            rollcall,
            env,
            "school",
            "create",
            "--slug",
            "twin",
            "--name",
            "Twin Oaks",
            "--admin-username",
            "admin",
            "--admin-password",
            ADMIN_PASSWORD,
        )
        assert created.returncode == 0, created.stderr
        async with (
            httpx.AsyncClient(base_url=one.url, timeout=60) as a,
            httpx.AsyncClient(base_url=other.url, timeout=60) as b,
        ):
            await signed_out_on_one_is_refused_on_the_other(a, b)
            token = await signed_in(a, "admin", ADMIN_PASSWORD)
            await throttling_counts_across_both(a, b, token)
            await an_import_on_one_shows_its_progress_on_the_other(a, b, token)
            await each_counts_its_own_metrics(a, b)
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.process.wait(timeout=30)
    assert "Traceback" not in log.read_text()


async def signed_in(client: httpx.AsyncClient, username: str, password: str) -> str:
    answer = (await graphql(client, LOGIN, {"s": "twin", "u": username, "p": password}))["data"]["login"]
    assert answer["errors"] == [], answer
    token: str = answer["token"]
    return token


async def signed_out_on_one_is_refused_on_the_other(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    token = await signed_in(a, "admin", ADMIN_PASSWORD)
    assert (await graphql(b, "{ me { username } }", token=token))["data"]["me"] == {"username": "admin"}
    assert (await graphql(a, "mutation { logout { errors { code } } }", token=token))["data"]["logout"] == {
        "errors": []
    }
    assert (await graphql(b, "{ me { username } }", token=token))["data"]["me"] is None
    refused = await graphql(b, "{ users { totalCount } }", token=token)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", refused


async def throttling_counts_across_both(a: httpx.AsyncClient, b: httpx.AsyncClient, token: str) -> None:
    added = await graphql(
        a,
        'mutation { addUser(input: {username: "guessed", type: PUPIL, password: "right-one"}) '
        "{ user { id } errors { code } } }",
        token=token,
    )
    assert added["data"]["addUser"]["errors"] == [], added
    # five wrong passwords on each server, at once: ten for the account from this address in all...
    answers = await asyncio.gather(
        *(
            graphql(client, LOGIN, {"s": "twin", "u": "guessed", "p": f"wrong-{n}"})
            for n in range(5)
            for client in (a, b)
        )
    )
    assert {a["data"]["login"]["errors"][0]["code"] for a in answers} == {"INVALID_CREDENTIALS"}
    # ...so the right password is refused on either, as neither server alone has seen ten
    for client in (a, b):
        refused = (await graphql(client, LOGIN, {"s": "twin", "u": "guessed", "p": "right-one"}))["data"][
            "login"
        ]
        assert refused["token"] is None and refused["errors"][0]["code"] == "RATE_LIMITED", refused


async def an_import_on_one_shows_its_progress_on_the_other(
    a: httpx.AsyncClient, b: httpx.AsyncClient, token: str
) -> None:
    rows = 200
    roster = "username,type\r\n" + "".join(f"twin-{n:03},PUPIL\r\n" for n in range(rows))
    job = (await upload(a, token, roster.encode()))["data"]["bulkImport"]["job"]
    confirm = await graphql(a, CONFIRM, {"id": job["id"], "p": ADMIN_PASSWORD}, token)
    assert confirm["data"]["confirmImport"]["job"] == {"status": "RUNNING", "processed": 0, "total": rows}
    states: list[tuple[str, int]] = []
    while not states or states[-1][0] == "RUNNING":
        state = (await graphql(b, JOB, {"id": job["id"]}, token))["data"]["importJob"]
        states.append((state["status"], state["processed"]))
        await asyncio.sleep(0.02)
    assert any(status == "RUNNING" and 0 < processed < rows for status, processed in states), states
    final = (await graphql(b, JOB, {"id": job["id"]}, token))["data"]["importJob"]
    assert final == {"status": "SUCCEEDED", "processed": rows, "total": rows}


async def each_counts_its_own_metrics(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    for _ in range(3):
        await graphql(a, "query OnlyOnOne { __typename }")
    for _ in range(2):
        await graphql(b, "query OnlyOnTheOther { __typename }")
    for _ in range(4):  # whichever of its two workers answers, a server shows the same counts: its own
        one, other = (await a.get("/metrics")).text, (await b.get("/metrics")).text
        assert (operation_count(one, "OnlyOnOne"), operation_count(one, "OnlyOnTheOther")) == (3, 0)
        assert (operation_count(other, "OnlyOnOne"), operation_count(other, "OnlyOnTheOther")) == (0, 2)
