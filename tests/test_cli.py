"""The `rollcall` command, run as a newcomer would run it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.embedded import EmbeddedServer, start_embedded
from db.engine import Database
from db.scope import school_scope
from tests.conftest import free_port, graphql, make_school, make_user

ROLLCALL = str(Path(sys.executable).parent / "rollcall")
DELETE_USERS = "mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code } } }"

pytestmark = pytest.mark.slow


@pytest.fixture
def env(migrated: EmbeddedServer, tmp_path: Path) -> dict[str, str]:
    urls = migrated.urls()
    return {
        **os.environ,
        "DATABASE_URL": urls.owner,
        "APP_DATABASE_URL": urls.app,
        "ROLLCALL_DATA_DIR": str(tmp_path),
    }


def rollcall(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command to its end. Async tests call it through `asyncio.to_thread`: they share their event
    loop with the in-process server, which must keep answering meanwhile."""
    return subprocess.run(
        [ROLLCALL, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def create(env: dict[str, str], slug: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return rollcall(
        env,
        "school",
        "create",
        f"--slug={slug}",
        "--name",
        "Oak Hill Primary",
        "--admin-username",
        "head",
        "--admin-password",
        "oak-hill-head-2026",
        *extra,
    )


async def test_school_create_prints_the_new_schools_id(env: dict[str, str], db: Database) -> None:
    slug = f"oak-hill-{uuid.uuid4().hex[:8]}"
    result = await asyncio.to_thread(
        create, env, slug, "--provider", "HWB", "--admin-first-name", "Hazel", "--admin-surname", "Oak"
    )
    assert result.returncode == 0, result.stderr
    school_id = uuid.UUID(result.stdout.strip())
    async with school_scope(db, school_id) as session:
        school = (await session.execute(text("select slug, provider from schools"))).one()
        admin = (await session.execute(text("select username, type, is_admin, first_name from users"))).one()
    assert tuple(school) == (slug, "HWB")
    assert tuple(admin) == ("head", "TEACHER", True, "Hazel")


def test_school_create_refuses_a_duplicate_slug(env: dict[str, str]) -> None:
    slug = f"dup-{uuid.uuid4().hex[:8]}"
    assert create(env, slug).returncode == 0
    again = create(env, slug)
    assert again.returncode != 0
    assert f"A school with the slug '{slug}' already exists." in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.parametrize("slug", ["Oak Hill", "-oak", "oak_hill", "", "x" * 64])
def test_school_create_refuses_a_malformed_slug(env: dict[str, str], slug: str) -> None:
    result = create(env, slug)
    assert result.returncode != 0
    assert "is not a valid slug" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_refused_school_leaves_nothing_behind(env: dict[str, str], owner_engine: object) -> None:
    slug = f"weak-{uuid.uuid4().hex[:8]}"
    result = await asyncio.to_thread(
        rollcall,
        env,
        "school",
        "create",
        "--slug",
        slug,
        "--name",
        "Weak",
        "--admin-username",
        "head",
        "--admin-password",
        "short",
    )
    assert result.returncode != 0
    assert "at least 8 characters" in result.stderr
    again = await asyncio.to_thread(create, env, slug)
    assert again.returncode == 0, again.stderr


def test_demo_is_idempotent(env: dict[str, str]) -> None:
    first = rollcall(env, "demo")
    second = rollcall(env, "demo")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "Demo school: demo" in first.stdout
    assert first.stdout == second.stdout


async def test_purge_older_than_0d_purges_a_user_deleted_a_moment_ago(
    env: dict[str, str], owner_engine: AsyncEngine, db: Database, http: httpx.AsyncClient
) -> None:
    # given: a pupil deleted just now, in a school that keeps deleted users for 30 days
    school = await make_school(owner_engine, db)
    pupil = await make_user(db, school, username="just.gone")
    deleted = await graphql(http, DELETE_USERS, {"ids": [str(pupil)]}, token=school.admin_token)
    assert deleted["data"]["deleteUsers"]["errors"] == []

    # when
    result = await asyncio.to_thread(rollcall, env, "purge", "--older-than", "0d")

    # then
    assert result.returncode == 0, result.stderr
    assert f"{school.slug}: 1 users purged" in result.stdout
    async with school_scope(db, school.id) as session:
        users = set((await session.execute(text("select username from users"))).scalars())
    assert users == {"admin"}


def test_purge_refuses_a_negative_age(env: dict[str, str]) -> None:
    result = rollcall(env, "purge", "--older-than=-1d")
    assert result.returncode != 0 and "not negative" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[str]:
    with serving(env) as url:
        yield url


@contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """`rollcall serve` started as an operator starts it, until it answers; stopped at the end."""
    port = free_port()
    process = subprocess.Popen(
        [ROLLCALL, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "rollcall serve did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_rollcall_serve_answers_over_http(served: str) -> None:
    assert httpx.get(served + "/healthz").json() == {"status": "ok"}
    assert httpx.get(served + "/readyz").json() == {"status": "ready"}
    body = httpx.post(served + "/graphql", json={"query": "{ school { slug } }"}).json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_without_database_url_the_embedded_server_in_the_data_dir_is_used(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "APP_DATABASE_URL"}}
    env["ROLLCALL_DATA_DIR"] = str(tmp_path / "data")
    try:
        result = rollcall(env, "demo")
        assert result.returncode == 0, result.stderr
        assert "Admin password: " in result.stdout
        password = (tmp_path / "data" / "demo-admin-password").read_text().strip()
        assert f"Admin password: {password}" in result.stdout
        assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    finally:
        start_embedded(tmp_path / "data").stop()
