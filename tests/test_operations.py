"""Running Rollcall for real: a database restart under a live server, logs, metrics, retention."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import migrate
from db.embedded import EmbeddedServer, start_embedded
from db.engine import Database
from db.models import UserType
from db.scope import school_scope
from tests.conftest import (
    ADMIN_PASSWORD,
    SchoolFixture,
    free_port,
    graphql,
    make_school,
    make_user,
    sign_in_as,
)
from tests.test_cli import ROLLCALL, rollcall
from web.app import create_app
from web.settings import Settings
from web.telemetry import MAX_OPERATION_LABELS, observe_operation

LOGIN = (
    "mutation ($s: String!, $u: String!, $p: String!) { login(school: $s, username: $u, password: $p) "
    "{ token errors { code } } }"
)
UPLOAD = "mutation ($file: Upload!) { bulkImport(file: $file) { job { id } errors { code } } }"
CONFIRM = (
    "mutation ($id: ID!, $p: String!) { confirmImport(jobId: $id, currentPassword: $p) "
    "{ job { status } errors { code message } } }"
)
JOB = "query ($id: ID!) { importJob(id: $id) { status processed failureReason } }"


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def serve(env: dict[str, str], log: Path) -> Served:
    port = free_port()
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [ROLLCALL, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Served(url, process, log)
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, log.read_text()
        time.sleep(0.1)


def stop(served: Served) -> None:
    served.process.terminate()
    served.process.wait(timeout=30)


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A PostgreSQL of this test's own, since the test stops and restarts it."""
    server = start_embedded(tmp_path / "pg", throwaway=True)
    yield server
    server.stop()


async def wait_for(url: str, path: str, status: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url) as client:
        while (await client.get(path)).status_code != status:
            assert time.monotonic() < deadline, f"{path} never answered {status}"
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_the_server_survives_a_database_restart(own_database: EmbeddedServer, tmp_path: Path) -> None:
    urls = own_database.urls()
    await migrate.upgrade(urls.owner, urls.app)
    env = {
        **os.environ,
        "DATABASE_URL": urls.owner,
        "APP_DATABASE_URL": urls.app,
        "ROLLCALL_DATA_DIR": str(tmp_path / "data"),
        "ROLLCALL_LOG_FORMAT": "json",
    }
    slug = "restart-school"
    created = await asyncio.to_thread(
        rollcall,
        env,
        "school",
        "create",
        "--slug",
        slug,
        "--name",
        "Restart",
        "--admin-username",
        "admin",
        "--admin-password",
        ADMIN_PASSWORD,
    )
    assert created.returncode == 0, created.stderr
    served = await asyncio.to_thread(serve, env, tmp_path / "server.log")
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
            token = (await graphql(http, LOGIN, {"s": slug, "u": "admin", "p": ADMIN_PASSWORD}))["data"][
                "login"
            ]["token"]
            roster = "username,type\r\n" + "".join(f"p{i:04},PUPIL\r\n" for i in range(2000))
            job = await upload(http, token, roster.encode())

            # given an import applying in the background (hashing 2,000 passwords: a minute or so), when the
            # database stops under it...
            confirm = await graphql(http, CONFIRM, {"id": job, "p": ADMIN_PASSWORD}, token=token)
            assert confirm["data"]["confirmImport"]["job"]["status"] == "RUNNING"
            while (await graphql(http, JOB, {"id": job}, token=token))["data"]["importJob"]["processed"] == 0:
                await asyncio.sleep(0.05)
            own_database.stop()

            # While it is away: not ready, and requests get a clear 503 (never a 500).
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert (await http.get("/healthz")).status_code == 200
            away = await http.post(
                "/graphql", json={"query": "{ me { id } }"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert away.status_code == 503 and "database is not answering" in away.text

            # When it is back, the same server serves again, with the same session.
            own_database.start()
            await wait_for(served.url, "/readyz", 200)
            me = await graphql(http, "{ me { username } }", token=token)
            assert me["data"]["me"] == {"username": "admin"}
            # ...and the import, still hashing, carries on (its progress writes found a fresh connection)
            state = (await graphql(http, JOB, {"id": job}, token=token))["data"]["importJob"]
            assert state["status"] == "RUNNING", "the import ended before the server could be killed"
    finally:
        # The server dies (no shutdown): nothing can mark its import FAILED.
        served.process.kill()
        await asyncio.to_thread(served.process.wait, 30)

    # A restarted server fails the import its predecessor was running when the database went away.
    served = await asyncio.to_thread(serve, env, tmp_path / "server.log")
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
            token = (await graphql(http, LOGIN, {"s": slug, "u": "admin", "p": ADMIN_PASSWORD}))["data"][
                "login"
            ]["token"]
            state = (await graphql(http, JOB, {"id": job}, token=token))["data"]["importJob"]
            assert state["status"] == "FAILED" and "nothing was changed" in state["failureReason"]
            users = await graphql(http, "{ users { totalCount } }", token=token)
            assert users["data"]["users"]["totalCount"] == 1
    finally:
        await asyncio.to_thread(stop, served)

    # Production logs: one JSON object per line, each naming its request, and no secrets anywhere.
    lines = [json.loads(line) for line in served.log.read_text().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "rollcall.access"]
    assert access and all(len(line["request_id"]) == 32 for line in access)
    assert any(line["logger"] == "rollcall.auth" and line["request_id"] != "-" for line in lines)
    everything = served.log.read_text()
    assert ADMIN_PASSWORD not in everything and token not in everything


async def upload(http: httpx.AsyncClient, token: str, data: bytes) -> str:
    response = await http.post(
        "/graphql",
        headers={"Authorization": f"Bearer {token}"},
        data={
            "operations": json.dumps({"query": UPLOAD, "variables": {"file": None}}),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": ("roster.csv", data, "text/csv")},
    )
    job_id: str = response.json()["data"]["bulkImport"]["job"]["id"]
    return job_id


async def test_metrics_count_requests_operations_and_refused_sign_ins(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    await graphql(http, "query RosterPage { users(first: 5) { totalCount } }", token=school.admin_token)
    await graphql(http, LOGIN, {"s": school.slug, "u": "admin", "p": "not-the-password"})
    body = (await http.get("/metrics")).text
    assert 'rollcall_graphql_operation_seconds_count{operation="RosterPage",type="query"}' in body
    assert 'rollcall_http_requests_total{method="POST",route="/graphql",status="200"}' in body
    assert 'rollcall_sign_in_failures_total{method="password"}' in body
    assert "# TYPE rollcall_import_jobs_total counter" in body
    assert "# TYPE rollcall_throttled_attempts_total counter" in body


async def test_operation_names_in_metrics_are_short_and_few(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    # given a name of a million characters, and more distinct names than metrics keep
    huge = "Q" * 1_000_000
    await http.post("/graphql", json={"query": f"query {huge} {{ me {{ id }} }}", "operationName": huge})
    for i in range(MAX_OPERATION_LABELS + 50):
        observe_operation(f"Flood{i}", "query", 0.001)
    # then the metrics stay small: the long name and the names over the cap count as "other"
    body = (await http.get("/metrics")).text
    assert "QQQQ" not in body and len(body) < 1_000_000
    assert 'operation="other",type="query"' in body
    named = {
        line.split('operation="')[1].split('"')[0]
        for line in body.splitlines()
        if line.startswith("rollcall_graphql_operation_seconds_count")
    }
    assert len(named) <= MAX_OPERATION_LABELS + 1


async def test_metrics_can_be_turned_off_or_kept_behind_a_token(
    settings: Settings, migrated: EmbeddedServer
) -> None:
    for changed, asked, status in (
        (dataclasses.replace(settings, metrics=False), {}, 404),
        (dataclasses.replace(settings, metrics_token="m3trics"), {}, 401),
        (dataclasses.replace(settings, metrics_token="m3trics"), {"Authorization": "Bearer wrong"}, 401),
        (dataclasses.replace(settings, metrics_token="m3trics"), {"Authorization": "Bearer m3trics"}, 200),
    ):
        app = create_app(changed, migrated.urls())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            assert (await client.get("/metrics", headers=asked)).status_code == status
        await app.state.db.dispose()


async def test_logs_carry_the_request_id_and_no_secrets(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    teacher = await make_user(db, school, username="loggy", type=UserType.TEACHER, password="teacher-pass-1")
    await graphql(http, LOGIN, {"s": school.slug, "u": "loggy", "p": "teacher-pass-1"})
    await graphql(
        http,
        'mutation { createApiToken(name: "App", scopes: [ROSTER_READ]) { token } }',
        token=school.admin_token,
    )
    await graphql(
        http,
        "mutation ($ids: [ID!]!, $current: String!) { resetPasswords(userIds: $ids, "
        'currentPassword: $current, newPassword: "brand-new-secret", '
        'confirmPassword: "brand-new-secret") { errors { code } } }',
        {"ids": [str(teacher)], "current": ADMIN_PASSWORD},
        token=school.admin_token,
    )
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /graphql 200" in logged
    for secret in ("teacher-pass-1", "brand-new-secret", ADMIN_PASSWORD, school.admin_token, "rca_"):
        assert secret not in logged


@pytest.mark.slow
async def test_purge_removes_long_deleted_users_but_keeps_their_audit_events(
    owner_engine: AsyncEngine, db: Database, migrated: EmbeddedServer, tmp_path: Path
) -> None:
    school = await make_school(owner_engine, db)
    old = await make_user(db, school, username="long.gone", first_name="Long", surname="Gone")
    recent = await make_user(db, school, username="just.gone")
    await sign_in_as(db, school, old)
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "insert into audit_events (school_id, actor_id, actor_label, action, target_user_ids, summary) values "
                '(:s, :a, \'admin\', \'user.created\', array[cast(:u as uuid)], \'{"username": "long.gone", "type": '
                "\"PUPIL\"}'), (:s, :u, 'long.gone', 'user.signed_in', array[cast(:u as uuid)], '{}')"
            ),
            {"s": school.id, "a": school.admin_id, "u": old},
        )
        await session.execute(
            text("update users set deleted_at = now() - interval '40 days', deleted_by = :a where id = :old"),
            {"a": school.admin_id, "old": old},
        )
        await session.execute(
            text(
                "update users set deleted_at = now() - interval '10 days', deleted_by = :old "
                "where id = :recent"
            ),
            {"old": old, "recent": recent},
        )
    urls = migrated.urls()
    env = {
        **os.environ,
        "DATABASE_URL": urls.owner,
        "APP_DATABASE_URL": urls.app,
        "ROLLCALL_DATA_DIR": str(tmp_path),
    }
    result = await asyncio.to_thread(rollcall, env, "purge", "--older-than", "30d")
    assert result.returncode == 0, result.stderr
    assert f"{school.slug}: 1 users purged" in result.stdout
    async with school_scope(db, school.id) as session:
        users = set((await session.execute(text("select username from users"))).scalars())
        sessions = await session.execute(text("select count(*) from sessions where user_id = :u"), {"u": old})
        events = (
            await session.execute(
                text(
                    "select action, actor_label, summary from audit_events where :u = any(target_user_ids) order by action"
                ),
                {"u": old},
            )
        ).all()
    assert users == {"admin", "just.gone"}
    assert sessions.scalar_one() == 0
    assert [tuple(e) for e in events] == [
        ("user.created", "admin", {"type": "PUPIL"}),
        ("user.signed_in", "(removed user)", {}),
    ]

    # Without --older-than each school's own retention period applies.
    async with school_scope(db, school.id) as session:
        await session.execute(text("update schools set deleted_user_retention_days = 7"))
    result = await asyncio.to_thread(rollcall, env, "purge")
    assert f"{school.slug}: 1 users purged" in result.stdout
    bad = await asyncio.to_thread(rollcall, env, "purge", "--older-than", "soon")
    assert bad.returncode != 0 and "not an age" in bad.stderr
