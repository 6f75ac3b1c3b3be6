"""Roster reads over HTTP, beside the floor, before and after compiled reads, all in one run.

Three servers run side by side as uvicorn subprocesses on loopback, one worker each, over one district:
Rollcall with compiled reads on ("after"), Rollcall with them off ("before", every field through Strawberry),
and bench/floor_app.py ("floor": the same JSON from one hand-written SQL statement). Measured in turns, so a
busy moment on the machine weighs on all three alike:

- the roster page (`users(first: 50)` by surname with registration classes and totalCount, as the launchpad
  asks for it): requests/s and p50/p99 at 20 concurrent clients;
- a whole-school sync (`users(first: 500)` with teaching classes, paged to the end, as an app syncing a
  school does): syncs/s and p50/p99 of a whole sync, 20 at a time;
- sign-in (`login`) beside argon2 verification on all cores, its floor;
- the roster page's latency (one client) in a school of the big district against the same school in a
  district of 10 schools (10,000 users), from a second database.

Every figure is reported with its ratio to the floor. `--full` loads 1,000 schools (1M users); the quick
run loads 100.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import dataset
from bench.harness import Bench, bench_database, save, table
from db.api_tokens import ApiScope, create_api_token
from db.passwords import HASHING_THREADS, hash_password, verify_password_async
from db.sessions import SessionPolicy, start_session
from tenants.scope import school_scope

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 20
SYNC_CLIENTS = 4  # apps syncing a whole school at once
SCHOOL = 3  # the school measured, in both districts
SMALL_DISTRICT = 10
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(hours=12))

ROSTER = """{ users(first: 50, orderBy: {field: SURNAME}) { totalCount
  edges { node { id username firstName surname type registrationClass { name } } } } }"""
SYNC = """query Sync($after: String) { users(first: 500, after: $after) { pageInfo { hasNextPage endCursor }
  edges { node { id username firstName surname type teachingClasses { name } } } } }"""
LOGIN = """mutation ($school: String!, $username: String!, $password: String!) {
  login(school: $school, username: $username, password: $password) { token errors { code } } }"""


@dataclass(frozen=True, slots=True)
class Figures:
    rate: float  # requests (or syncs) per second
    p50_ms: float
    p99_ms: float
    # CPU the server process and PostgreSQL spent on each one: what the rate would follow on a machine where
    # nothing else runs (here, other work shares the two cores).
    cpu_ms: float

    @staticmethod
    def mean(runs: list[Figures]) -> Figures:
        return Figures(*(statistics.fmean(getattr(r, name) for r in runs) for name in Figures.__slots__))


@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int
    postmaster: int
    role: str  # the role its connections sign in as

    def cpu_seconds(self) -> float:
        """CPU used so far by this server and by the PostgreSQL backends serving the role (background work,
        such as a checkpoint, is left out: it belongs to no request)."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = stat.read_text().split(" ", 1)
                title = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue  # it exited
            fields = rest.rsplit(")", 1)[1].split()
            backend = int(fields[1]) == self.postmaster and title.startswith(f"postgres: {self.role} ".encode())
            if int(pid) == self.pid or backend:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class School:
    slug: str
    admin_token: str
    api_token: str
    pupils: list[str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(factory: str, bench: Bench, data_dir: str, **env: str) -> Iterator[Server]:
    """`factory` under uvicorn as `rollcall serve` runs it: one worker on loopback (access log off)."""
    port = free_port()
    with open(Path(data_dir) / f"{port}.log", "wb") as log:
        yield from _serve(factory, bench, port, log, {"ROLLCALL_DATA_DIR": data_dir, **env})


def _serve(factory: str, bench: Bench, port: int, log: IO[bytes], env: dict[str, str]) -> Iterator[Server]:
    urls = bench.server.urls()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--log-level", "warning", "--no-access-log", "--no-proxy-headers"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": urls.owner, "APP_DATABASE_URL": urls.app,
                       "ROLLCALL_LOG_FORMAT": "text", **env},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{factory} did not start") from None
                time.sleep(0.1)
        postmaster = int((bench.server.pgdata / "postmaster.pid").read_text().split()[0])
        yield Server(f"http://127.0.0.1:{port}", process.pid, postmaster, make_url(urls.app).username or "")
    finally:
        process.terminate()
        process.wait(timeout=30)


async def prepare(bench: Bench, number: int) -> School:
    """Tokens for the school measured: an admin's session (the launchpad) and a roster token (an app)."""
    school = dataset.school(number)
    async with school_scope(bench.db, school.id) as session:
        admin_id = (await session.execute(text("select id from users where username = 'admin'"))).scalar_one()
        pupils = list((await session.execute(text(
            "select username from users where type = 'PUPIL' order by username limit 1000"))).scalars())
        admin_token, _ = await start_session(session, school_id=school.id, user_id=admin_id,
                                             policy=POLICY)
        api_token, _ = await create_api_token(session, school_id=school.id, actor_id=admin_id, actor_label="admin",
                                              name="Bench sync", scopes=[ApiScope.ROSTER_READ])
    return School(slug=school.slug, admin_token=admin_token, api_token=api_token, pupils=pupils)


@asynccontextmanager
async def client(url: str, clients: int) -> AsyncIterator[httpx.AsyncClient]:
    """Like an app's client: bearer tokens, no cookie jar (a session cookie would need the CSRF header)."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        http.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        yield http


async def hammer(server: Server, one: Callable[[httpx.AsyncClient], Awaitable[object]], *, clients: int,
                 seconds: float, warmup: float = 0.5) -> Figures:
    """`clients` loops doing `one` against `server` for `seconds` after `warmup`, each until it has finished one
    more after that (so slow work is measured too): the rate of finishing, latencies, and CPU per one."""
    latencies: list[float] = []
    done = 0
    async with client(server.url, clients) as http:
        cpu = server.cpu_seconds()
        start = time.perf_counter() + warmup
        end = start + seconds
        stop = start

        async def loop() -> None:
            nonlocal done, stop
            counted = False
            while (began := time.perf_counter()) < end or not counted:
                await one(http)
                done += 1
                if (finished := time.perf_counter()) >= start:
                    latencies.append(finished - began)
                    counted, stop = True, max(stop, finished)

        await asyncio.gather(*(loop() for _ in range(clients)))
        cpu = server.cpu_seconds() - cpu
    ordered = sorted(latencies)
    return Figures(rate=len(ordered) / (stop - start), p50_ms=1000 * ordered[len(ordered) // 2],
                   p99_ms=1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], cpu_ms=1000 * cpu / done)


def graphql_post(query: str, token: str, variables: dict[str, Any] | None = None) -> Callable[
        [httpx.AsyncClient], Awaitable[bytes]]:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"query": query, "variables": variables or {}}

    async def post(http: httpx.AsyncClient) -> bytes:
        response = await http.post("/graphql", json=body, headers=headers)
        assert response.status_code == 200 and b'"errors"' not in response.content[:200], response.text[:300]
        return response.content

    return post


def floor_post(path: str, token: str, body: dict[str, Any] | None = None) -> Callable[
        [httpx.AsyncClient], Awaitable[bytes]]:
    headers = {"Authorization": f"Bearer {token}"}

    async def post(http: httpx.AsyncClient) -> bytes:
        response = await http.post(path, json=body or {}, headers=headers)
        assert response.status_code == 200, response.text[:300]
        return response.content

    return post


async def sync_graphql(http: httpx.AsyncClient, token: str) -> list[Any]:
    pages, after = [], None
    while True:
        page = json.loads(await graphql_post(SYNC, token, {"after": after})(http))
        pages.append(page)
        if not page["data"]["users"]["pageInfo"]["hasNextPage"]:
            return pages
        after = page["data"]["users"]["pageInfo"]["endCursor"]


async def sync_floor(http: httpx.AsyncClient, token: str) -> list[Any]:
    pages, after = [], None
    while True:
        page = json.loads(await floor_post("/sync", token, {"after": after})(http))
        pages.append(page)
        if not page["data"]["users"]["pageInfo"]["hasNextPage"]:
            return pages
        after = page["data"]["users"]["pageInfo"]["endCursor"]


async def same_answers(after: Server, before: Server, floor: Server, school: School) -> int:
    """The three servers answer the roster page and every sync page alike; the number of sync pages."""
    async with client(after.url, 1) as a, client(before.url, 1) as b, client(floor.url, 1) as f:
        roster = [json.loads(await graphql_post(ROSTER, school.admin_token)(a)),
                  json.loads(await graphql_post(ROSTER, school.admin_token)(b)),
                  json.loads(await floor_post("/roster", school.admin_token)(f))]
        assert roster[0] == roster[1] == roster[2], "the roster page differs between the servers"
        syncs = [await sync_graphql(a, school.api_token), await sync_graphql(b, school.api_token),
                 await sync_floor(f, school.api_token)]
        assert syncs[0] == syncs[1] == syncs[2], "the sync differs between the servers"
        return len(syncs[0])


async def turns(runs: dict[str, Callable[[], Awaitable[Figures]]], rounds: int) -> dict[str, Figures]:
    """Each run once per round, in turn, each round starting one further along (so none is always first);
    the mean of each."""
    figures: dict[str, list[Figures]] = {name: [] for name in runs}
    names = list(runs)
    for round in range(rounds):
        for name in names[round % len(names):] + names[:round % len(names)]:
            figures[name].append(await runs[name]())
    return {name: Figures.mean(found) for name, found in figures.items()}


async def verify_floor(password_hash: str, seconds: float) -> float:
    """argon2 verifications per second, every hashing thread busy."""
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        await asyncio.gather(*(verify_password_async(password_hash, dataset.PASSWORD) for _ in range(HASHING_THREADS)))
        done += HASHING_THREADS
    return done / elapsed


async def sign_ins(server: Server, school: School, seconds: float) -> Figures:
    pupils = iter(school.pupils * 10)

    async def one(http: httpx.AsyncClient) -> None:
        response = await http.post("/graphql", json={"query": LOGIN, "variables": {
            "school": school.slug, "username": next(pupils), "password": dataset.PASSWORD}})
        assert response.json()["data"]["login"]["token"], response.text

    return await hammer(server, one, clients=2 * HASHING_THREADS, seconds=seconds)


async def latencies(small: Server, small_school: School, big: Server, big_school: School,
                    pairs: int) -> tuple[list[float], list[float]]:
    """One client, one roster page at a time, taking turns between the two districts (so both see the machine
    alike): the latencies in each."""
    found: tuple[list[float], list[float]] = ([], [])
    async with client(small.url, 1) as a, client(big.url, 1) as b:
        asks = ((a, graphql_post(ROSTER, small_school.admin_token)), (b, graphql_post(ROSTER, big_school.admin_token)))
        for i in range(pairs + 20):
            for (http, post), into in zip(asks, found, strict=True):
                started = time.perf_counter()
                await post(http)
                if i >= 20:
                    into.append(time.perf_counter() - started)
    return found


def _compared(what: str, figures: dict[str, Figures], *, unit: str) -> dict[str, float]:
    """Every server's figures, each with its ratio to the floor's (throughput, and CPU per request)."""
    floor = figures["floor"]
    found: dict[str, float] = {}
    for name, measured in figures.items():
        prefix = f"{what}_{name}"
        found |= {f"{prefix}_{unit}": round(measured.rate, 1), f"{prefix}_p50_ms": round(measured.p50_ms, 2),
                  f"{prefix}_p99_ms": round(measured.p99_ms, 2), f"{prefix}_cpu_ms": round(measured.cpu_ms, 3)}
        if name != "floor":
            found |= {f"{prefix}_ratio_to_floor": round(measured.rate / floor.rate, 3),
                      f"{prefix}_cpu_ratio_to_floor": round(floor.cpu_ms / measured.cpu_ms, 3)}
    return found


async def main(full: bool) -> dict[str, Any]:
    schools = 1000 if full else 100
    seconds, rounds = (3.0, 5) if full else (1.5, 4)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rollcall-roster-bench-") as data_dir:
        async with bench_database() as big, bench_database() as small:
            results["roster_district_load_seconds"] = round(await dataset.load(big.owner, range(schools)), 1)
            await dataset.load(small.owner, range(SMALL_DISTRICT))
            for loaded in (big, small):
                loaded.server.psql("checkpoint", database="rollcall")  # not in the middle of a measurement
            school, small_school = await prepare(big, SCHOOL), await prepare(small, SCHOOL)
            with served("gql.app:app_from_env", big, data_dir, ROLLCALL_COMPILED_READS="1") as after, \
                    served("gql.app:app_from_env", big, data_dir, ROLLCALL_COMPILED_READS="0") as before, \
                    served("bench.floor_app:app_from_env", big, data_dir,
                           BENCH_SCHOOL_ID=str(dataset.school(SCHOOL).id)) as floor, \
                    served("gql.app:app_from_env", small, data_dir, ROLLCALL_COMPILED_READS="1") as after_small:
                pages = await same_answers(after, before, floor, school)

                def run(server: Server, one: Callable[[httpx.AsyncClient], Awaitable[object]],
                        clients: int) -> Callable[[], Awaitable[Figures]]:
                    return lambda: hammer(server, one, clients=clients, seconds=seconds)

                def roster_at(server: Server, path: str | None = None) -> Callable[[], Awaitable[Figures]]:
                    token = school.admin_token
                    return run(server, graphql_post(ROSTER, token) if path is None else floor_post(path, token),
                               CLIENTS)

                roster = await turns({
                    "floor": roster_at(floor, "/roster"), "before": roster_at(before), "after": roster_at(after),
                    "floor_unauthenticated": roster_at(floor, "/roster/unauthenticated"),
                }, rounds)

                def graphql_sync(http: httpx.AsyncClient) -> Awaitable[object]:
                    return sync_graphql(http, school.api_token)

                def floor_sync(http: httpx.AsyncClient) -> Awaitable[object]:
                    return sync_floor(http, school.api_token)

                sync = await turns({"floor": run(floor, floor_sync, SYNC_CLIENTS),
                                    "before": run(before, graphql_sync, SYNC_CLIENTS),
                                    "after": run(after, graphql_sync, SYNC_CLIENTS)}, rounds)

                password_hash = hash_password(dataset.PASSWORD)
                hashing = [await verify_floor(password_hash, seconds / 2)]
                signing_in = await sign_ins(after, school, seconds * 2)
                hashing.append(await verify_floor(password_hash, seconds / 2))

                small_latencies, big_latencies = await latencies(after_small, small_school, after, school,
                                                                 500 if full else 300)

    results.update({
        "roster_district_users": schools * dataset.USERS_PER_SCHOOL,
        "roster_school_users": dataset.USERS_PER_SCHOOL,
        "roster_clients": CLIENTS,
        "sync_clients": SYNC_CLIENTS,
        "sync_pages": pages,
        **_compared("roster", roster, unit="rps"),
        **_compared("sync", sync, unit="syncs_per_s"),
        "roster_page_ratio": round(roster["after"].rate / roster["floor"].rate, 3),
        "roster_page_ratio_before": round(roster["before"].rate / roster["floor"].rate, 3),
        "roster_page_cpu_ratio": round(roster["floor"].cpu_ms / roster["after"].cpu_ms, 3),
        "roster_page_cpu_ratio_before": round(roster["floor"].cpu_ms / roster["before"].cpu_ms, 3),
        "sync_ratio": round(sync["after"].rate / sync["floor"].rate, 3),
        "sync_ratio_before": round(sync["before"].rate / sync["floor"].rate, 3),
        "sync_cpu_ratio": round(sync["floor"].cpu_ms / sync["after"].cpu_ms, 3),
        "sync_cpu_ratio_before": round(sync["floor"].cpu_ms / sync["before"].cpu_ms, 3),
        "signin_per_s": round(signing_in.rate, 1),
        "signin_p50_ms": round(signing_in.p50_ms, 1),
        "argon2_verifies_per_s_all_cores": round(statistics.fmean(hashing), 1),
        "signin_ratio": round(signing_in.rate / statistics.fmean(hashing), 3),
    })
    small_p50, big_p50 = statistics.median(small_latencies), statistics.median(big_latencies)
    size = "1m" if full else f"{schools}k"
    results.update({
        "latency_10k_p50_ms": round(1000 * small_p50, 2),
        f"latency_{size}_p50_ms": round(1000 * big_p50, 2),
        f"latency_{size}_over_10k": round(big_p50 / small_p50, 3),
    })
    print(table([(key, str(value)) for key, value in results.items()]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true")
    save(asyncio.run(main(parser.parse_args().full)))
