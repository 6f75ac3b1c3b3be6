"""Load: many concurrent clients drive a mix of roster reads, sign-ins and edits against `rollcall serve
--workers 2` for a bounded time, then the database is checked against what the clients did.

The checks: no 5xx, no top-level GraphQL error, no business error (each client edits only its own pupils, so
none is expected), and no data lost: the users counted are the ones there were plus every successful
addUser, every pupil is in exactly one registration class, the one the client last moved them to, and every
surname and version is the one the client last saw. The figures are requests/s, overall and per kind, and
p50/p95/p99 latencies, measured by the clients over loopback, beside each kind's p50 when one client has
the server to itself (measured first, in the same run). The clients, the server and PostgreSQL share the
machine, so its load average as the run starts is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench.harness import Bench, bench_database, save, table
from db.audit import Actor
from db.classes import assign_to_class, create_class
from db.embedded import DatabaseUrls
from db.models import ClassKind, ClassMembership, User, UserType
from db.passwords import hash_password_async
from db.schools import create_school
from db.scope import school_scope
from db.sessions import SessionPolicy, start_session
from db.users import create_user

CLIENTS = 40
ALONE_SECONDS, ALONE_REQUESTS = 10, 120
PUPILS = 400
REGISTRATION_CLASSES = 12
PUPIL_PASSWORD = "load-pupil-pass"
SLUG = "load-bench"
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(hours=4))

ROSTER = """
query Roster($after: String) {
  users(first: 50, after: $after) {
    totalCount
    edges {
      node { id username firstName surname type registrationClass { id name } teachingClasses { id name } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""
CLASSES = "query Classes { classes { id name kind memberCount } }"
LOGIN = """
mutation Login($school: String!, $username: String!, $password: String!) {
  login(school: $school, username: $username, password: $password) { token errors { code } }
}
"""
ADD_USER = """
mutation AddUser($input: AddUserInput!) { addUser(input: $input) { user { id version } errors { code } } }
"""
EDIT_SURNAME = """
mutation EditSurname($id: ID!, $value: String!, $version: Int!) {
  updateUserField(userId: $id, field: SURNAME, value: $value, expectedVersion: $version) {
    user { version surname } errors { code }
  }
}
"""
MOVE = """
mutation Move($classId: ID!, $userIds: [ID!]!) {
  assignClass(classId: $classId, userIds: $userIds) { schoolClass { id } errors { code } }
}
"""
# How often each kind comes up in the mix.
MIX = {"roster": 35, "classes": 15, "login": 15, "add_user": 10, "edit_surname": 15, "move_class": 10}


@dataclass
class Pupil:
    id: str
    username: str
    version: int
    surname: str
    class_id: str


@dataclass
class Record:
    alone: bool
    kind: str
    status: int
    seconds: float
    top_level: list[str]
    payload: list[str]


@dataclass
class Client:
    """One simulated admin at a browser: its own connection, session and pupils."""

    number: int
    token: str
    pupils: list[Pupil]
    class_ids: list[str]
    records: list[Record] = field(default_factory=list)
    added: list[Pupil] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    after: str | None = None
    sent: int = 0
    alone: bool = False
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.number)


@dataclass
class Setup:
    school_id: uuid.UUID
    class_ids: list[str]
    clients: list[Client]
    initial_users: int


async def seed(bench: Bench, clients: int, pupils: int) -> Setup:
    """A school, its registration classes, pupils spread over them, and one admin session per client."""
    async with async_sessionmaker(bench.owner)() as session, session.begin():
        school = await create_school(
            session,
            slug=SLUG,
            name="Load Bench Academy",
            admin_username="admin",
            admin_password="load-bench-admin-password",
        )
    actor = Actor(id=school.admin_id, label="admin")
    password_hash = await hash_password_async(PUPIL_PASSWORD)
    async with school_scope(bench.db, school.school_id) as session:
        classes = [
            await create_class(
                session,
                school_id=school.school_id,
                actor=actor,
                name=f"Year {i}",
                kind=ClassKind.REGISTRATION,
            )
            for i in range(REGISTRATION_CLASSES)
        ]
        rows = [
            await create_user(
                session,
                school_id=school.school_id,
                username=f"pupil{i:04}",
                password_hash=password_hash,
                type=UserType.PUPIL,
                first_name=f"Pupil{i}",
                surname=f"Surname{i}",
            )
            for i in range(pupils)
        ]
        for number, school_class in enumerate(classes):
            await assign_to_class(
                session,
                school_id=school.school_id,
                actor=actor,
                class_id=school_class.id,
                user_ids=[row.id for row in rows[number :: len(classes)]],
            )
        await session.flush()
        everyone = [
            Pupil(
                id=str(row.id),
                username=row.username,
                version=row.version,
                surname=row.surname,
                class_id=str(classes[i % len(classes)].id),
            )
            for i, row in enumerate(rows)
        ]
        tokens = [
            (
                await start_session(
                    session, school_id=school.school_id, user_id=school.admin_id, policy=POLICY
                )
            )[0]
            for _ in range(clients)
        ]
    class_ids = [str(c.id) for c in classes]
    return Setup(
        school_id=school.school_id,
        class_ids=class_ids,
        initial_users=pupils + 1,
        clients=[
            Client(number=n, token=tokens[n], pupils=everyone[n::clients], class_ids=class_ids)
            for n in range(clients)
        ],
    )


@asynccontextmanager
async def served(urls: DatabaseUrls, workdir: Path, workers: int) -> AsyncIterator[str]:
    """`rollcall serve` on a free loopback port, started as an operator would; its log goes to serve.log."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": urls.owner,
        "APP_DATABASE_URL": urls.app,
        "ROLLCALL_DATA_DIR": str(workdir),
    }
    command = [
        str(Path(sys.executable).parent / "rollcall"),
        "serve",
        "--workers",
        str(workers),
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with (workdir / "serve.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            async with httpx.AsyncClient(base_url=url, timeout=2) as http:
                deadline = time.monotonic() + 90
                while not await ready(http):
                    if process.returncode is not None or time.monotonic() > deadline:
                        raise SystemExit(
                            "rollcall serve did not become ready:\n" + server_log(workdir)[-4000:]
                        )
                    await asyncio.sleep(0.2)
            yield url
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=60)


async def ready(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


def server_log(workdir: Path) -> str:
    return (workdir / "serve.log").read_text(errors="replace")


async def call(
    http: httpx.AsyncClient,
    client: Client,
    kind: str,
    query: str,
    variables: dict[str, Any],
    token: str | None,
) -> dict[str, Any] | None:
    """Send one operation and record how it went; the data of a clean answer, else None."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    try:
        response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    except httpx.HTTPError as error:
        client.transport_errors.append(f"{kind}: {error!r}")
        return None
    seconds = time.perf_counter() - started
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    top_level = [(e.get("extensions") or {}).get("code", "NO_CODE") for e in body.get("errors") or []]
    data = body.get("data") or {}
    payload = [
        error["code"]
        for value in data.values()
        if isinstance(value, dict)
        for error in value.get("errors", [])
    ]
    client.records.append(Record(client.alone, kind, response.status_code, seconds, top_level, payload))
    return data if response.status_code == 200 and not top_level and not payload else None


async def one_step(http: httpx.AsyncClient, client: Client, kind: str) -> None:
    rng, serial = client.rng, client.sent
    match kind:
        case "roster":
            data = await call(http, client, kind, ROSTER, {"after": client.after}, client.token)
            if data is not None:
                page = data["users"]["pageInfo"]
                client.after = page["endCursor"] if page["hasNextPage"] else None
        case "classes":
            await call(http, client, kind, CLASSES, {}, client.token)
        case "login":
            pupil = rng.choice(client.pupils)
            await call(
                http,
                client,
                kind,
                LOGIN,
                {"school": SLUG, "username": pupil.username, "password": PUPIL_PASSWORD},
                None,
            )
        case "add_user":
            username, class_id = f"load{client.number:02}x{serial:05}", rng.choice(client.class_ids)
            data = await call(
                http,
                client,
                kind,
                ADD_USER,
                {
                    "input": {
                        "username": username,
                        "password": PUPIL_PASSWORD,
                        "type": "PUPIL",
                        "firstName": "New",
                        "surname": f"Added{serial}",
                        "registrationClassId": class_id,
                    }
                },
                client.token,
            )
            if data is not None:
                user = data["addUser"]["user"]
                pupil = Pupil(
                    id=user["id"],
                    username=username,
                    version=user["version"],
                    surname=f"Added{serial}",
                    class_id=class_id,
                )
                client.added.append(pupil)
                client.pupils.append(pupil)
        case "edit_surname":
            pupil = rng.choice(client.pupils)
            surname = f"Edited{client.number}-{serial}"
            data = await call(
                http,
                client,
                kind,
                EDIT_SURNAME,
                {"id": pupil.id, "value": surname, "version": pupil.version},
                client.token,
            )
            if data is not None:
                user = data["updateUserField"]["user"]
                pupil.version, pupil.surname = user["version"], user["surname"]
        case "move_class":
            pupil, class_id = rng.choice(client.pupils), rng.choice(client.class_ids)
            if (
                await call(
                    http, client, kind, MOVE, {"classId": class_id, "userIds": [pupil.id]}, client.token
                )
                is not None
            ):
                pupil.class_id = class_id


async def drive(url: str, client: Client, until: float, budget: list[int]) -> None:
    """Send requests one after another until the time is up or the shared request budget is spent."""
    kinds, weights = list(MIX), list(MIX.values())
    refuse_cookies = DefaultCookiePolicy(allowed_domains=[])  # an API client: the bearer token is its session
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
        http.cookies.jar.set_policy(refuse_cookies)
        while time.monotonic() < until and budget[0] > 0:
            budget[0] -= 1
            client.sent += 1
            await one_step(http, client, client.rng.choices(kinds, weights)[0])


async def check(bench: Bench, setup: Setup) -> list[str]:
    """What the database says against what the clients did; each line is one failed check."""
    failed: list[str] = []
    records = [r for c in setup.clients for r in c.records]  # alone or not, every answer is checked
    statuses = Counter(r.status for r in records if r.status != 200)
    failed += [f"{n} answers were HTTP {status}" for status, n in sorted(statuses.items())]
    failed += [f"transport error: {e}" for c in setup.clients for e in c.transport_errors][:10]
    top_level = Counter(code for r in records for code in r.top_level)
    failed += [f"{n} top-level errors {code}" for code, n in top_level.items()]
    payload = Counter(f"{r.kind}:{code}" for r in records for code in r.payload)
    failed += [f"{n} unexpected payload errors {code}" for code, n in payload.items()]
    expected = {p.id: p for c in setup.clients for p in c.pupils}
    async with school_scope(bench.db, setup.school_id) as session:
        users = (
            await session.execute(
                select(func.count())
                .select_from(User)
                .where(User.school_id == setup.school_id, User.deleted_at.is_(None))
            )
        ).scalar_one()
        added = sum(len(c.added) for c in setup.clients)
        if users != setup.initial_users + added:
            failed.append(f"{users} users, but {setup.initial_users} + {added} added were expected")
        found = {
            str(row.id): row
            for row in (
                await session.execute(
                    select(User).where(User.school_id == setup.school_id, User.type == UserType.PUPIL)
                )
            ).scalars()
        }
        registrations: dict[str, list[str]] = defaultdict(list)
        memberships = await session.execute(
            select(ClassMembership.user_id, ClassMembership.class_id).where(
                ClassMembership.school_id == setup.school_id, ClassMembership.kind == ClassKind.REGISTRATION
            )
        )
        for user_id, class_id in memberships:
            registrations[str(user_id)].append(str(class_id))
    for pupil in expected.values():
        row = found.get(pupil.id)
        if row is None:
            failed.append(f"pupil {pupil.username} is missing")
        elif (row.surname, row.version) != (pupil.surname, pupil.version):
            failed.append(
                f"{pupil.username}: {row.surname!r} v{row.version}, the client last saw "
                f"{pupil.surname!r} v{pupil.version}"
            )
        if registrations.get(pupil.id) != [pupil.class_id]:
            failed.append(
                f"{pupil.username} is in registration classes {registrations.get(pupil.id)}, "
                f"expected [{pupil.class_id}]"
            )
    per_class = Counter(p.class_id for p in expected.values())
    actual = Counter(class_id for classes in registrations.values() for class_id in classes)
    if per_class != actual:
        failed.append(f"members per class {dict(actual)} differ from what the clients did {dict(per_class)}")
    return failed[:40]


def percentile(sorted_seconds: list[float], q: float) -> float:
    return sorted_seconds[min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))] * 1000


def figures(setup: Setup, elapsed: float, workers: int, load_before: float) -> dict[str, Any]:
    records = [r for c in setup.clients for r in c.records if not r.alone]
    by_kind: dict[str, list[float]] = defaultdict(list)
    alone: dict[str, list[float]] = defaultdict(list)
    for record in (r for c in setup.clients for r in c.records):
        for kind in (record.kind, "all"):
            (alone if record.alone else by_kind)[kind].append(record.seconds)
    results: dict[str, Any] = {
        "load_clients": len(setup.clients),
        "load_workers": workers,
        "load_cpus": os.cpu_count(),
        "load_average_1m_before": round(load_before, 2),
        "load_seconds": round(elapsed, 1),
        "load_requests": len(records),
        "load_initial_users": setup.initial_users,
        "load_users_added": sum(len(c.added) for c in setup.clients),
    }
    for kind, seconds in sorted(by_kind.items()):
        seconds.sort()
        results[f"load_{kind}_requests"] = len(seconds)
        results[f"load_{kind}_per_s"] = round(len(seconds) / elapsed, 1)
        for q in (0.5, 0.95, 0.99):
            results[f"load_{kind}_p{round(q * 100)}_ms"] = round(percentile(seconds, q), 1)
    for kind, seconds in sorted(alone.items()):
        results[f"load_{kind}_alone_p50_ms"] = round(percentile(sorted(seconds), 0.5), 1)
    return results


def report(results: dict[str, Any]) -> str:
    """The run, then one line per kind of request: how many, how fast, and how long they took."""
    run = [(k, str(v)) for k, v in results.items() if not k.endswith(("_requests", "_per_s", "_ms"))]
    kinds = [*sorted(MIX), "all"]
    columns = ("requests", "per_s", "p50_ms", "p95_ms", "p99_ms", "alone_p50_ms")
    rows = [("kind", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "alone p50")] + [
        (kind, *(str(results.get(f"load_{kind}_{column}", "-")) for column in columns)) for kind in kinds
    ]
    lines = ["  ".join(f"{cell:>{10 if i else 13}}" for i, cell in enumerate(row)) for row in rows]
    return table(run) + "\n\n" + "\n".join(lines)


async def main(full: bool) -> dict[str, Any]:
    seconds, cap, workers = (120, 200_000, 2) if full else (20, 30_000, 2)
    with tempfile.TemporaryDirectory(prefix="rollcall-load-") as tmp:
        async with bench_database() as bench:
            setup = await seed(bench, CLIENTS, PUPILS)
            async with served(bench.server.urls(), Path(tmp), workers) as url:
                # One client alone first: each kind's latency with the server to itself, beside which the
                # latencies under load read.
                solo = setup.clients[0]
                solo.alone = True
                await drive(url, solo, time.monotonic() + ALONE_SECONDS, [ALONE_REQUESTS])
                solo.alone = False
                budget = [cap]
                # The machine's own load as the run starts: the clients, the server and PostgreSQL share it.
                load_before = os.getloadavg()[0]
                started = time.monotonic()
                await asyncio.gather(*(drive(url, c, started + seconds, budget) for c in setup.clients))
                elapsed = time.monotonic() - started
            failed = await check(bench, setup)
        # A failed check is easier to read beside what the server logged as going wrong.
        logged = [
            line for line in server_log(Path(tmp)).splitlines() if "ERROR" in line or "Traceback" in line
        ]
    results = figures(setup, elapsed, workers, load_before)
    print(report(results))
    if failed:
        raise SystemExit("load: checks failed:\n" + "\n".join(failed + logged[-20:]))
    print("load: every check passed (no 5xx, no errors, no data lost)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    save(asyncio.run(main(parser.parse_args().full)))
