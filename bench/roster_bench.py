"""The request path over HTTP, beside a bare floor, all in one run, with load from wrk.

Servers run as uvicorn subprocesses on loopback, one worker each, over one district (200 schools of 1,000
users quick, 1,000 full): Rollcall as this checkout has it, the bare floor (bench/floor_app.py: one SQL
statement over raw asyncpg, no caller lookup, no ORM, no GraphQL) and, with `--baseline DIR`, Rollcall from
another checkout (e.g. `git archive <commit> | tar -x -C DIR`), so before and after are measured in one run.
wrk drives every row, 20 connections, with Lua scripts for the bodies and headers; the rows are measured in
turns, each round starting one further along, so a busy moment on the machine weighs on all alike.

Past one machine, the roster page is also measured through PgBouncer in transaction mode (Debian's, started
on a free port, 20 server connections, and 4) with ROLLCALL_DB_POOLER=pgbouncer, with that setting straight to
PostgreSQL (the setting's own cost), and on two servers at once (10 connections each): each beside the
roster page on one server straight to PostgreSQL, in the same run.

Each row gives requests/s, p50 and p99, each as a ratio to the floor's, and CPU per request (the server's
process and its PostgreSQL backends, and PgBouncer where it is on the path, from /proc) as the floor's CPU
over the row's. The floor of the rows
on the roster school is the roster floor; the 500-user page has a floor written for it; sign-in is set
beside argon2 verifications per second on all cores, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import dataset
from bench.harness import Bench, bench_database, save, table
from db.api_tokens import ApiScope, create_api_token
from db.audit import Actor
from db.passwords import (
    HASHING_THREADS,
    MEMORY_COST_KIB,
    PARALLELISM,
    TIME_COST,
    hash_password,
    verify_password,
)
from db.scope import school_scope
from db.sessions import SessionPolicy, start_session
from tests.pgbouncer import PgBouncer, pgbouncer

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 20
ROSTER_ROW = "roster page, session token"
POOLED_ROW = "roster page, through PgBouncer (transaction mode)"
SMALL_POOL_ROW = "roster page, through PgBouncer, 4 server connections"
UNNAMED_ROW = "roster page, ROLLCALL_DB_POOLER=pgbouncer, no PgBouncer"
TWO_SERVERS_ROW = "roster page, two servers (10 connections each)"
# PgBouncer's server connections: as many as the one server's pool may ask for, so the pooler itself is
# measured rather than a queue in front of it.
PGBOUNCER_POOL = 20
# ...and a pool of a fifth of that, as a busy deployment shares it: what a worker loses with fewer.
SMALL_POOL = 4
ROSTER_SCHOOL, WRITE_SCHOOL, LOGIN_SCHOOL, SCIM_SCHOOL = 3, 4, 5, 6
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(hours=12))

ROSTER = """{ users(first: 50, orderBy: {field: SURNAME}) { totalCount
  edges { node { id username firstName surname type registrationClass { name } } } } }"""
# The same page as a front end writes it: colocated fragments (the same JSON as ROSTER), and with the signed-in
# user and their school beside it.
ROSTER_FRAGMENTS = """
fragment UsersTable on UserConnection { totalCount edges { node { ...UserRow } } }
fragment UserRow on User { id username firstName surname type registrationClass { name } }"""
ROSTER_FRAGMENT = (
    "query Roster { users(first: 50, orderBy: {field: SURNAME}) { ...UsersTable } }" + ROSTER_FRAGMENTS
)
ROSTER_SCREEN = (
    "query Launchpad { me { id username firstName surname type isAdmin } school { id name slug }\n"
    "  users(first: 50, orderBy: {field: SURNAME}) { ...UsersTable } }" + ROSTER_FRAGMENTS
)
PAGE_500 = """{ users(first: 500, orderBy: {field: SURNAME}) { pageInfo { hasNextPage endCursor }
  edges { node { id username firstName surname type teachingClasses { name } } } } }"""
TYPENAME = "{ __typename }"
ME = "{ me { id username firstName surname type isAdmin } }"
EDIT_SURNAME = """mutation ($id: ID!, $value: String!, $version: Int!) {
  updateUserField(userId: $id, field: SURNAME, value: $value, expectedVersion: $version) {
    user { id version } errors { code } } }"""
LOGIN = """mutation ($school: String!, $username: String!, $password: String!) {
  login(school: $school, username: $username, password: $password) { token errors { code } } }"""

# Every script counts answers that are not a clean 200 and prints them with wrk's own latency figures.
_LUA_COMMON = """
local threads = {}
THREADS = 2  -- wrk -t 2; a thread's own Lua state does not see `threads`
function setup(thread) table.insert(threads, thread); thread:set("number", #threads) end
function init(args) failed = 0; sent = 0 end
function response(status, headers, body)
  if status ~= 200 or body:find('"errors":%s*%[%s*{') then
    failed = failed + 1
    if failed == 1 then io.write("FAILED " .. status .. " " .. body:sub(1, 300):gsub("\\n", " ") .. "\\n") end
  end
  if on_body then on_body(body) end
end
function done(summary, latency, requests)
  local f = 0
  for _, t in ipairs(threads) do f = f + t:get("failed") end
  io.write(string.format("BENCH %d %d %d %d %d\\n", summary.requests, f, latency:percentile(50),
                         latency:percentile(99), summary.duration))
end
"""
_LUA_FIXED = """
wrk.method = "{method}"
wrk.body = {body}
{headers}
"""
# One body per request, in turn from a list.
_LUA_ROTATING = """
wrk.method = "POST"
{headers}
local bodies = {bodies}
function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent * THREADS + number) % #bodies + 1])
end
"""
# Each thread edits its own share of the users, with the version the server last gave for each.
_LUA_EDITS = """
wrk.method = "POST"
{headers}
local users = {users}
local versions = {versions}
local query = {query}
function request()
  sent = sent + 1
  local id = users[(sent * THREADS + number) % #users + 1]
  local value = "Edited" .. number .. "x" .. sent
  local body = '{{"query":' .. query .. ',"variables":{{"id":"' .. id .. '","value":"' .. value
               .. '","version":' .. versions[id] .. '}}}}'
  return wrk.format(nil, nil, nil, body)
end
function on_body(body)
  local id, version = body:match('"id":%s*"([%x%-]+)",%s*"version":%s*(%d+)')
  if id then versions[id] = tonumber(version) end
end
"""


def lua(value: Any) -> str:
    """A Python value (str, int, list, dict of those) as a Lua literal."""
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are Lua's too, for the characters used here
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    return "{" + ", ".join(f"[{lua(k)}] = {lua(v)}" for k, v in value.items()) + "}"


def lua_headers(headers: dict[str, str]) -> str:
    return "\n".join(
        f"wrk.headers[{lua(k)}] = {lua(v)}"
        for k, v in {"Content-Type": "application/json", **headers}.items()
    )


def graphql_body(query: str, variables: dict[str, Any] | None = None) -> str:
    return json.dumps({"query": query, "variables": variables or {}})


@dataclass(frozen=True, slots=True)
class Load:
    """What wrk sends for one row: a path and a Lua script."""

    path: str
    script: str
    connections: int = CONNECTIONS

    @staticmethod
    def fixed(path: str, body: str | None, headers: dict[str, str], method: str = "POST") -> Load:
        return Load(
            path,
            _LUA_COMMON
            + _LUA_FIXED.format(
                method=method, body=lua(body) if body else "nil", headers=lua_headers(headers)
            ),
        )

    @staticmethod
    def rotating(
        path: str, bodies: list[str], headers: dict[str, str], connections: int = CONNECTIONS
    ) -> Load:
        return Load(
            path,
            _LUA_COMMON + _LUA_ROTATING.format(bodies=lua(bodies), headers=lua_headers(headers)),
            connections,
        )


@dataclass(frozen=True, slots=True)
class Figures:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # server process and its PostgreSQL backends, per request
    failed: int

    @staticmethod
    def mean(runs: list[Figures]) -> Figures:
        return Figures(
            statistics.fmean(r.rate for r in runs),
            statistics.fmean(r.p50_ms for r in runs),
            statistics.fmean(r.p99_ms for r in runs),
            statistics.fmean(r.cpu_ms for r in runs),
            sum(r.failed for r in runs),
        )


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int
    postmaster: int
    role: str
    helpers: tuple[int, ...] = ()  # processes on the request path whose CPU counts too (PgBouncer)

    def cpu_seconds(self) -> float:
        """CPU used so far by this server and by the PostgreSQL backends of its role (background work, such as
        a checkpoint, belongs to no request and is left out). Only the server being measured is busy."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" ", 1)
                title = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            fields = rest.rsplit(")", 1)[1].split()
            backend = int(fields[1]) == self.postmaster and title.startswith(
                f"postgres: {self.role} ".encode()
            )
            if int(pid) == self.pid or int(pid) in self.helpers or backend:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def cpu_seconds_own(self) -> float:
        """CPU used so far by this server's process alone."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_factory(source: Path) -> str:
    """The app factory of a checkout: web.app since the layout has a web package, gql.app before."""
    return "web.app:app_from_env" if (source / "web" / "app.py").exists() else "gql.app:app_from_env"


@contextmanager
def served(
    factory: str, bench: Bench, data_dir: str, source: Path = ROOT, helpers: tuple[int, ...] = (), **env: str
) -> Iterator[Server]:
    """`factory` under uvicorn as `rollcall serve` runs it: one worker on loopback, access log off; the code
    from `source`; `env` on top of the database URLs."""
    port = free_port()
    urls = bench.server.urls()
    with open(Path(data_dir) / f"{port}.log", "wb") as log:
        yield from _serve(
            factory,
            bench,
            port,
            log,
            source,
            helpers,
            {
                "DATABASE_URL": urls.owner,
                "APP_DATABASE_URL": urls.app,
                "ROLLCALL_LOG_FORMAT": "text",
                "ROLLCALL_DATA_DIR": data_dir,
                "PYTHONPATH": str(source),
                **env,
            },
        )


def _serve(
    factory: str,
    bench: Bench,
    port: int,
    log: IO[bytes],
    source: Path,
    helpers: tuple[int, ...],
    env: dict[str, str],
) -> Iterator[Server]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            factory,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
            "--no-proxy-headers",
        ],
        cwd=source,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    said = Path(log.name).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{factory} did not start:\n{said}") from None
                time.sleep(0.1)
        postmaster = int((bench.server.pgdata / "postmaster.pid").read_text().split()[0])
        yield Server(
            f"http://127.0.0.1:{port}",
            process.pid,
            postmaster,
            make_url(bench.server.urls().app).username or "",
            helpers,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def wrk() -> str:
    """wrk's path, installed with apt-get when it is missing (as root, or with sudo where that is set up)."""
    found = shutil.which("wrk")
    if found is None:
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        subprocess.run([*prefix, "apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    assert found, "wrk is needed: apt-get install -y wrk"
    return found


def drive(server: Server, load: Load, seconds: int, script_dir: Path) -> Figures:
    """wrk against `server` for `seconds` with the load's connections: its figures, and the CPU the server and
    its backends spent per request."""
    return drive_together([server], load, seconds, script_dir)


def drive_together(servers: list[Server], load: Load, seconds: int, script_dir: Path) -> Figures:
    """One wrk for each server, all at once, each with the load's connections: the requests/s of them all,
    p50 and p99 weighted by each one's requests, and the CPU all the servers and their backends spent per
    request. (The servers share one role, so each one's backends count once: the first server's.)"""
    script = script_dir / f"{abs(hash(load.script))}.lua"
    script.write_text(load.script)
    cpu = servers[0].cpu_seconds() + sum(server.cpu_seconds_own() for server in servers[1:])
    runs = [
        subprocess.Popen(
            [
                wrk(),
                "-t",
                "2",
                "-c",
                str(load.connections),
                "-d",
                f"{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                server.url + load.path,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for server in servers
    ]
    outputs = [run.communicate() for run in runs]
    cpu = servers[0].cpu_seconds() + sum(server.cpu_seconds_own() for server in servers[1:]) - cpu
    figures: list[tuple[int, int, int, int, int]] = []
    for run, (stdout, stderr) in zip(runs, outputs, strict=True):
        found = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+)$", stdout, re.MULTILINE)
        assert run.returncode == 0 and found, stdout + stderr
        requests, failed, p50_us, p99_us, duration_us = map(int, found.groups())
        if failed:
            print(
                f"{failed} of {requests} answers to {load.path} were not clean, such as:",
                re.findall(r"^FAILED .*$", stdout, re.MULTILINE)[:1],
            )
        figures.append((requests, failed, p50_us, p99_us, duration_us))
    requests = sum(f[0] for f in figures)
    weight = max(requests, 1)
    return Figures(
        rate=sum(f[0] / (f[4] / 1e6) for f in figures),
        p50_ms=sum(f[0] * f[2] for f in figures) / weight / 1000,
        p99_ms=sum(f[0] * f[3] for f in figures) / weight / 1000,
        cpu_ms=1000 * cpu / weight,
        failed=sum(f[1] for f in figures),
    )


@dataclass(frozen=True, slots=True)
class Tokens:
    """Everything the rows need: sessions, tokens and the people they act on."""

    roster_school: str
    admin_session: str
    api_token: str
    write_session: str
    edits: list[str]  # pupil ids in the write school
    login_school: str
    login_usernames: list[str]
    scim_token: str


async def _admin(session: Any) -> Any:
    return (await session.execute(text("select id from users where username = 'admin'"))).scalar_one()


async def prepare(bench: Bench) -> Tokens:
    roster, write, login, scim = (
        dataset.school(n) for n in (ROSTER_SCHOOL, WRITE_SCHOOL, LOGIN_SCHOOL, SCIM_SCHOOL)
    )
    async with school_scope(bench.db, roster.id) as session:
        admin_id = await _admin(session)
        admin_session, _ = await start_session(session, school_id=roster.id, user_id=admin_id, policy=POLICY)
        api_token, _ = await create_api_token(
            session,
            school_id=roster.id,
            actor=Actor(id=admin_id, label="admin"),
            name="Bench sync",
            scopes=[ApiScope.ROSTER_READ],
        )
    async with school_scope(bench.db, write.id) as session:
        admin_id = await _admin(session)
        write_session, _ = await start_session(session, school_id=write.id, user_id=admin_id, policy=POLICY)
        edits = [
            str(i)
            for i in (
                await session.execute(text("select id from users where type = 'PUPIL' order by id limit 800"))
            ).scalars()
        ]
    async with school_scope(bench.db, login.id) as session:
        usernames = list(
            (
                await session.execute(
                    text("select username from users where type = 'PUPIL' order by username limit 800")
                )
            ).scalars()
        )
    async with bench.owner.begin() as connection:  # a managed school, as SCIM needs
        await connection.execute(text("select set_config('app.school_id', :id, true)"), {"id": str(scim.id)})
        await connection.execute(text("update schools set provider = 'C2K' where id = :id"), {"id": scim.id})
    async with school_scope(bench.db, scim.id) as session:
        scim_token, _ = await create_api_token(
            session,
            school_id=scim.id,
            actor=Actor(id=None, label="bench"),
            name="Bench provider",
            scopes=[ApiScope.PROVISION],
        )
    return Tokens(
        roster_school=str(roster.id),
        admin_session=admin_session,
        api_token=api_token,
        write_session=write_session,
        edits=edits,
        login_school=login.slug,
        login_usernames=usernames,
        scim_token=scim_token,
    )


async def edits_load(bench: Bench, tokens: Tokens) -> Load:
    """The surname edits, with each user's current version (earlier rounds have moved them on)."""
    async with school_scope(bench.db, dataset.school(WRITE_SCHOOL).id) as session:
        versions = {
            str(i): v
            for i, v in await session.execute(
                text("select id, version from users where id = any(cast(:ids as uuid[]))"),
                {"ids": tokens.edits},
            )
        }
    return Load(
        "/graphql",
        _LUA_COMMON
        + _LUA_EDITS.format(
            headers=lua_headers({"Authorization": f"Bearer {tokens.write_session}"}),
            users=lua(tokens.edits),
            versions=lua(versions),
            query=lua(json.dumps(EDIT_SURNAME)),
        ),
    )


def rows(tokens: Tokens) -> dict[str, Load]:
    """Each row of the table but the edits (which need the versions of the moment): what wrk sends."""
    session = {"Authorization": f"Bearer {tokens.admin_session}"}
    return {
        ROSTER_ROW: Load.fixed("/graphql", graphql_body(ROSTER), session),
        "roster page with fragments, session token": Load.fixed(
            "/graphql", graphql_body(ROSTER_FRAGMENT), session
        ),
        "roster page with fragments, me and school beside, session token": Load.fixed(
            "/graphql", graphql_body(ROSTER_SCREEN), session
        ),
        "{ __typename }, session token": Load.fixed("/graphql", graphql_body(TYPENAME), session),
        "{ __typename }, API token": Load.fixed(
            "/graphql", graphql_body(TYPENAME), {"Authorization": f"Bearer {tokens.api_token}"}
        ),
        "{ __typename }, no token": Load.fixed("/graphql", graphql_body(TYPENAME), {}),
        "me": Load.fixed("/graphql", graphql_body(ME), session),
        "SCIM GET /Users?count=100": Load.fixed(
            "/scim/v2/Users?count=100", None, {"Authorization": f"Bearer {tokens.scim_token}"}, method="GET"
        ),
        "500-user page, teaching classes (API token)": Load.fixed(
            "/graphql", graphql_body(PAGE_500), {"Authorization": f"Bearer {tokens.api_token}"}
        ),
        "login": Load.rotating(
            "/graphql",
            [
                graphql_body(
                    LOGIN, {"school": tokens.login_school, "username": name, "password": dataset.PASSWORD}
                )
                for name in tokens.login_usernames
            ],
            {},
            connections=2 * HASHING_THREADS,
        ),  # argon2 is the queue
    }


def floors(tokens: Tokens) -> dict[str, Load]:
    school = {"X-Bench-School": tokens.roster_school}
    return {"roster": Load.fixed("/roster", "{}", school), "500-user page": Load.fixed("/sync", "{}", school)}


def same_answers(rollcall: Server, floor: Server, tokens: Tokens) -> None:
    """The floor answers what Rollcall answers, for both statements it stands for."""
    with httpx.Client(timeout=30) as http:
        for query, path, token in (
            (ROSTER, "/roster", tokens.admin_session),
            (PAGE_500, "/sync", tokens.api_token),
        ):
            ours = http.post(
                rollcall.url + "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
            ).json()
            bare = http.post(
                floor.url + path, json={}, headers={"X-Bench-School": tokens.roster_school}
            ).json()
            assert ours == bare, f"the floor's {path} differs from what /graphql answers"
        headers = {"Authorization": f"Bearer {tokens.admin_session}"}
        bare = http.post(
            floor.url + "/roster", json={}, headers={"X-Bench-School": tokens.roster_school}
        ).json()
        written = http.post(
            rollcall.url + "/graphql", json={"query": ROSTER_FRAGMENT}, headers=headers
        ).json()
        assert written == bare, "the page written with fragments differs from the floor's"
        screen = http.post(rollcall.url + "/graphql", json={"query": ROSTER_SCREEN}, headers=headers).json()
        assert "errors" not in screen and screen["data"]["users"] == bare["data"]["users"], screen


def pooler_stats(bouncer: PgBouncer) -> tuple[int, int]:
    """PgBouncer's totals for the Rollcall database: microseconds spent in transactions, transactions."""
    stats = next(row for row in bouncer.admin("SHOW STATS") if row["database"] == "rollcall")
    return int(stats["total_xact_time"]), int(stats["total_xact_count"])


def verify_floor(password_hash: str, seconds: float) -> float:
    """argon2 verifications per second with every core busy: one thread per core, each verifying without a
    pause (not through the product's pool, whose size is part of what `login` measures), with the product's
    own parameters."""
    assert password_hash.startswith(f"$argon2id$v=19$m={MEMORY_COST_KIB},t={TIME_COST},p={PARALLELISM}$")
    cores = os.cpu_count() or 1
    done = [0] * cores
    started = time.perf_counter()
    deadline = started + seconds

    def verify(core: int) -> None:
        while time.perf_counter() < deadline:
            assert verify_password(password_hash, dataset.PASSWORD)
            done[core] += 1

    threads = [threading.Thread(target=verify, args=(core,)) for core in range(cores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def ratios(found: Figures, floor: Figures) -> dict[str, float]:
    return {
        "rate_ratio": round(found.rate / floor.rate, 3),
        "p50_ratio": round(found.p50_ms / floor.p50_ms, 2),
        "p99_ratio": round(found.p99_ms / floor.p99_ms, 2),
        "cpu_ratio": round(floor.cpu_ms / max(found.cpu_ms, 0.001), 3),
    }


def markdown(results: dict[str, Any], servers: list[str]) -> str:
    """The table for the README: one line a row, each server's figures and ratios to the floor."""
    head = "| row | floor | " + " | ".join(f"{name} | {name} / floor" for name in servers) + " |"
    lines = [head, "|" + " --- |" * (2 + 2 * len(servers))]
    for row, measured in results["rows"].items():
        floor = measured["floor"]
        cells = [
            row,
            f"{floor['rate']:.0f}/s, p50 {floor['p50_ms']:.1f}, p99 {floor['p99_ms']:.1f} ms"
            + (f", CPU {floor['cpu_ms']:.2f} ms" if floor.get("cpu_ms") else ""),
        ]
        for name in servers:
            if name not in measured:
                cells += ["-", "-"]
                continue
            mine = measured[name]
            cells.append(
                f"{mine['rate']:.0f}/s, p50 {mine['p50_ms']:.1f}, p99 {mine['p99_ms']:.1f} ms, "
                f"CPU {mine['cpu_ms']:.2f} ms" + (f", {mine['failed']} failed" if mine["failed"] else "")
            )
            cells.append(
                f"**{mine['rate_ratio']}** (p50 {mine.get('p50_ratio', '-')}, p99 "
                f"{mine.get('p99_ratio', '-')}, CPU {mine.get('cpu_ratio', '-')})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| row | over the roster page on one server, straight to PostgreSQL |", "| --- | --- |"]
    for row, measured in results["rows"].items():
        if over := measured.get("rollcall", {}).get("over_one_server_direct"):
            lines.append(
                f"| {row} | **{over['rate_ratio']}** (p50 {over['p50_ratio']}, p99 {over['p99_ratio']}, "
                f"CPU {over['cpu_ratio']}) |"
            )
    return "\n".join(lines)


PAST_ONE_MACHINE = (POOLED_ROW, SMALL_POOL_ROW, UNNAMED_ROW, TWO_SERVERS_ROW)
EDITS_ROW = "updateUserField (surname)"


async def main(
    full: bool,
    baseline: Path | None = None,
    schools: int | None = None,
    only: frozenset[str] | None = None,
) -> dict[str, Any]:
    """Every row, or with `only` the rows it names (each exactly as the table names it)."""

    def wanted(row: str) -> bool:
        return only is None or row in only

    schools = schools or (1000 if full else 200)
    seconds, rounds = (5, 3) if full else (3, 2)
    results: dict[str, Any] = {
        "load_average_1m_before": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "connections": CONNECTIONS,
        "load_generator": "wrk -t 2",
        "schools": schools,
        "users": schools * dataset.USERS_PER_SCHOOL,
        "seconds_per_run": seconds,
        "rounds": rounds,
    }
    measured: dict[tuple[str, str], list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="rollcall-roster-bench-") as data_dir:
        async with bench_database() as bench:
            results["district_load_seconds"] = round(await dataset.load(bench.owner, range(schools)), 1)
            bench.server.psql("checkpoint", database="rollcall")  # not in the middle of a measurement
            tokens = await prepare(bench)
            if only is not None and (unknown := only - {*rows(tokens), EDITS_ROW, *PAST_ONE_MACHINE}):
                raise SystemExit(f"no such row: {', '.join(sorted(unknown))}")
            with ExitStack() as stack:
                floor = stack.enter_context(served("bench.floor_app:app_from_env", bench, data_dir))
                servers = {"rollcall": stack.enter_context(served("web.app:app_from_env", bench, data_dir))}
                if baseline is not None:
                    servers["before"] = stack.enter_context(
                        served(app_factory(baseline), bench, data_dir, source=baseline.resolve())
                    )
                # Past one machine: this checkout through PgBouncer (transaction mode) with the setting it
                # needs; the same setting straight to PostgreSQL (what the setting costs, without the hop);
                # and a second server beside the first, the load split between them.
                past_one_machine = any(wanted(row) for row in PAST_ONE_MACHINE)
                past: list[Server] = []
                if past_one_machine:
                    bouncer, pooled, pooled_small, unnamed, second = _past_one_machine(stack, bench, data_dir)
                    past = [pooled, pooled_small, unnamed, second]
                # The floor answers as this checkout does; a baseline may order ties otherwise (it is the
                # product as it was), so it is measured beside, not held to the floor's answer.
                for server in [servers["rollcall"], *past]:
                    same_answers(server, floor, tokens)
                scripts = Path(data_dir)
                loads, floor_loads = rows(tokens), floors(tokens)
                roster = loads[ROSTER_ROW]
                loads |= {
                    POOLED_ROW: roster,
                    SMALL_POOL_ROW: roster,
                    UNNAMED_ROW: roster,
                    TWO_SERVERS_ROW: dataclasses.replace(roster, connections=CONNECTIONS // 2),
                }
                turns: list[tuple[str, str, list[Server]]] = [
                    (row, name, [server])
                    for row in [*rows(tokens), EDITS_ROW]
                    if row != "login" and wanted(row)
                    for name, server in servers.items()
                ]
                if past_one_machine:
                    turns += [
                        (row, "rollcall", on)
                        for row, on in (
                            (POOLED_ROW, [pooled]),
                            (SMALL_POOL_ROW, [pooled_small]),
                            (UNNAMED_ROW, [unnamed]),
                            (TWO_SERVERS_ROW, [servers["rollcall"], second]),
                        )
                        if wanted(row)
                    ]
                if turns:
                    turns = [("roster", "floor", [floor]), ("500-user page", "floor", [floor]), *turns]
                busy: list[float] = []  # PgBouncer's server connections in a transaction at once, on average
                per_request: list[float] = []  # transactions per request through PgBouncer
                for row, name, on in turns[:2] + [t for t in turns if t[0].startswith("roster")]:
                    load = floor_loads[row] if name == "floor" else loads[row]
                    drive_together(on, load, 1, scripts)  # warm: plans compiled, pools filled
                for number in range(rounds):
                    shift = number * len(turns) // rounds
                    for row, name, on in turns[shift:] + turns[:shift]:
                        if name == "floor":
                            load = floor_loads[row]
                        elif row.startswith("updateUserField"):
                            load = await edits_load(bench, tokens)
                        else:
                            load = loads[row]
                        before = pooler_stats(bouncer) if row == POOLED_ROW else None
                        found = drive_together(on, load, seconds, scripts)
                        measured.setdefault((row, name), []).append(found)
                        if before is not None:
                            after = pooler_stats(bouncer)
                            busy.append((after[0] - before[0]) / 1e6 / seconds)
                            per_request.append((after[1] - before[1]) / max(found.rate * seconds, 1))
                password_hash = hash_password(dataset.PASSWORD)
                hashing: list[float] = []
                if wanted("login"):
                    for _ in range(rounds):
                        hashing.append(verify_floor(password_hash, seconds))
                        for name, server in servers.items():
                            measured.setdefault(("login", name), []).append(
                                drive(server, loads["login"], 2 * seconds, scripts)
                            )
                    hashing.append(verify_floor(password_hash, seconds))
    results["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    # Sizing: the server connections one worker keeps in a transaction at full load, 20 requests at once
    # (PgBouncer's transaction time over the wall time), and the transactions each roster page takes.
    if busy:
        results["pgbouncer_server_connections_in_transaction_per_worker"] = round(statistics.fmean(busy), 2)
        results["pgbouncer_transactions_per_roster_page"] = round(statistics.fmean(per_request), 2)
    print(table([(f"{row} / {name}", repr(found)) for (row, name), found in measured.items()]))
    means = {key: Figures.mean(found) for key, found in measured.items()}
    table_rows: dict[str, dict[str, Any]] = {}
    argon2 = statistics.fmean(hashing) if hashing else 0.0
    for row in [*rows(tokens), EDITS_ROW]:
        if not wanted(row):
            continue
        if row == "login":
            floor_shown = {
                "name": "argon2 verifications/s, all cores",
                "rate": round(argon2, 1),
                "p50_ms": 0.0,
                "p99_ms": 0.0,
                "cpu_ms": 0.0,
            }
        else:
            floor_key = "500-user page" if row.startswith("500") else "roster"
            floor_figures = means[floor_key, "floor"]
            floor_shown = {
                "name": floor_key,
                "rate": round(floor_figures.rate, 1),
                "p50_ms": round(floor_figures.p50_ms, 2),
                "p99_ms": round(floor_figures.p99_ms, 2),
                "cpu_ms": round(floor_figures.cpu_ms, 3),
            }
        shown: dict[str, Any] = {"floor": floor_shown}
        for name in servers:
            mine = means[row, name]
            shown[name] = {
                "rate": round(mine.rate, 1),
                "p50_ms": round(mine.p50_ms, 2),
                "p99_ms": round(mine.p99_ms, 2),
                "cpu_ms": round(mine.cpu_ms, 3),
                "failed": mine.failed,
                "p99_over_p50": round(mine.p99_ms / max(mine.p50_ms, 0.001), 2),
            }
            shown[name] |= (
                {"rate_ratio": round(mine.rate / argon2, 3)}
                if row == "login"
                else ratios(mine, floor_figures)
            )
        table_rows[row] = shown
    for row in PAST_ONE_MACHINE:
        if not wanted(row):
            continue
        direct = means[ROSTER_ROW, "rollcall"]
        roster_floor = means["roster", "floor"]
        mine = means[row, "rollcall"]
        table_rows[row] = {
            "floor": {
                "name": "roster",
                "rate": round(roster_floor.rate, 1),
                "p50_ms": round(roster_floor.p50_ms, 2),
                "p99_ms": round(roster_floor.p99_ms, 2),
                "cpu_ms": round(roster_floor.cpu_ms, 3),
            },
            "rollcall": {
                "rate": round(mine.rate, 1),
                "p50_ms": round(mine.p50_ms, 2),
                "p99_ms": round(mine.p99_ms, 2),
                "cpu_ms": round(mine.cpu_ms, 3),
                "failed": mine.failed,
                "p99_over_p50": round(mine.p99_ms / max(mine.p50_ms, 0.001), 2),
                **ratios(mine, roster_floor),
                # beside the roster page on one server, straight to PostgreSQL, in the same run
                "over_one_server_direct": ratios(mine, direct),
            },
        }
    results["rows"] = table_rows
    for name in servers:
        if "{ __typename }, session token" not in table_rows or "{ __typename }, no token" not in table_rows:
            break
        session, none = (
            table_rows["{ __typename }, session token"][name],
            table_rows["{ __typename }, no token"][name],
        )
        results[f"{name}_typename_session_over_no_token"] = round(session["rate"] / none["rate"], 3)
    print(table([(k, str(v)) for k, v in results.items() if k != "rows"]))
    print(markdown(results, list(servers)))
    return {"http_bench": results}


def _past_one_machine(
    stack: ExitStack, bench: Bench, data_dir: str
) -> tuple[PgBouncer, Server, Server, Server, Server]:
    """This checkout through PgBouncer (20 server connections, and 4), with ROLLCALL_DB_POOLER=pgbouncer
    straight to PostgreSQL, and a second server."""
    bouncer = stack.enter_context(pgbouncer(bench.server, pool_size=PGBOUNCER_POOL))
    pooled = stack.enter_context(
        served(
            "web.app:app_from_env",
            bench,
            data_dir,
            helpers=(bouncer.pid,),
            APP_DATABASE_URL=bouncer.app_url(),
            ROLLCALL_DB_POOLER="pgbouncer",
        )
    )
    small = stack.enter_context(pgbouncer(bench.server, pool_size=SMALL_POOL))
    pooled_small = stack.enter_context(
        served(
            "web.app:app_from_env",
            bench,
            data_dir,
            helpers=(small.pid,),
            APP_DATABASE_URL=small.app_url(),
            ROLLCALL_DB_POOLER="pgbouncer",
        )
    )
    unnamed = stack.enter_context(
        served("web.app:app_from_env", bench, data_dir, ROLLCALL_DB_POOLER="pgbouncer")
    )
    second = stack.enter_context(served("web.app:app_from_env", bench, data_dir))
    return bouncer, pooled, pooled_small, unnamed, second


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout of Rollcall, measured beside this one"
    )
    parser.add_argument("--schools", type=int, help="how many schools to load (200 quick, 1,000 full)")
    parser.add_argument(
        "--rows",
        nargs="+",
        metavar="ROW",
        help="measure only these rows, each named as the table names it (e.g. login); all when not given",
    )
    arguments = parser.parse_args()
    only = None if arguments.rows is None else frozenset(arguments.rows)
    save(asyncio.run(main(arguments.full, arguments.baseline, arguments.schools, only)))
