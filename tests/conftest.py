"""Fixtures: one throwaway embedded PostgreSQL for the whole run, the app served over real HTTP, factories."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from starlette.applications import Starlette

from db import migrate
from db.api_tokens import ApiScope, create_api_token
from db.audit import Actor
from db.embedded import EmbeddedServer, start_embedded
from db.engine import Database
from db.models import UserType
from db.passwords import hash_password_async
from db.schools import create_school
from db.scope import school_scope
from db.sessions import SessionPolicy, start_session
from db.users import create_user
from web.app import create_app
from web.settings import Settings

ADMIN_PASSWORD = "correct-horse-battery"
POLICY = SessionPolicy(idle=timedelta(hours=1), lifetime=timedelta(hours=12))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def embedded() -> Iterator[EmbeddedServer]:
    with tempfile.TemporaryDirectory(prefix="rollcall-test-") as tmp:
        server = start_embedded(Path(tmp), throwaway=True)
        yield server
        server.stop()


@pytest.fixture(scope="session")
async def migrated(embedded: EmbeddedServer) -> EmbeddedServer:
    urls = embedded.urls()
    await migrate.upgrade(urls.owner, urls.app)
    return embedded


@pytest.fixture(scope="session")
async def owner_engine(migrated: EmbeddedServer) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated.urls().owner)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def db(migrated: EmbeddedServer) -> AsyncIterator[Database]:
    database = Database(migrated.urls().app, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=None,
        app_database_url=None,
        production=False,
        graphiql=True,
        introspection=True,
        pool_size=5,
        session_idle_minutes=60,
        session_lifetime_hours=12,
        login_code_secret=bytes(range(100, 132)),
    )


@pytest.fixture(scope="session")
def app(migrated: EmbeddedServer, settings: Settings) -> Starlette:
    return create_app(settings, migrated.urls())


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """The app under uvicorn on a free loopback port, in this test run's event loop."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
async def server_url(app: Starlette) -> AsyncIterator[str]:
    """The real app, compiled reads on as in production."""
    async with serving(app) as url:
        yield url


@pytest.fixture(scope="session")
def strawberry_app(migrated: EmbeddedServer, settings: Settings) -> Starlette:
    """The same app over the same database with compiled reads off: every query answered by Strawberry."""
    return create_app(replace(settings, compiled_reads=False), migrated.urls())


@pytest.fixture(scope="session")
async def strawberry_url(strawberry_app: Starlette) -> AsyncIterator[str]:
    async with serving(strawberry_app) as url:
        yield url


@contextmanager
def counting_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement the engine runs inside the block."""
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


@pytest.fixture
async def http(server_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        yield client


@pytest.fixture
async def strawberry_http(strawberry_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with compiled reads off."""
    async with httpx.AsyncClient(base_url=strawberry_url, timeout=30) as client:
        yield client


@pytest.fixture(params=["compiled", "strawberry"])
def read_path(request: pytest.FixtureRequest) -> str:
    """Which path answers roster reads: a behaviour test of them runs once on each."""
    return str(request.param)


@pytest.fixture
async def reader(read_path: str, server_url: str, strawberry_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app whose reads take `read_path`: compiled (where that path answers) or Strawberry."""
    url = server_url if read_path == "compiled" else strawberry_url
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class SchoolFixture:
    id: uuid.UUID
    slug: str
    admin_id: uuid.UUID
    admin_token: str


async def make_school(owner_engine: AsyncEngine, db: Database, **overrides: Any) -> SchoolFixture:
    slug = overrides.pop("slug", f"school-{uuid.uuid4().hex[:12]}")
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        school = await create_school(
            session,
            slug=slug,
            name=overrides.pop("name", f"School {slug}"),
            admin_username="admin",
            admin_password=ADMIN_PASSWORD,
            **overrides,
        )
    async with school_scope(db, school.school_id) as session:
        token, _ = await start_session(
            session, school_id=school.school_id, user_id=school.admin_id, policy=POLICY
        )
    return SchoolFixture(id=school.school_id, slug=slug, admin_id=school.admin_id, admin_token=token)


async def make_user(
    db: Database,
    school: SchoolFixture,
    *,
    type: UserType = UserType.PUPIL,
    username: str | None = None,
    password: str = "pupil-pass",
    **fields: Any,
) -> uuid.UUID:
    async with school_scope(db, school.id) as session:
        user = await create_user(
            session,
            school_id=school.id,
            username=username or f"u{uuid.uuid4().hex[:10]}",
            password_hash=await hash_password_async(password),
            type=type,
            **fields,
        )
        return user.id


async def sign_in_as(db: Database, school: SchoolFixture, user_id: uuid.UUID) -> str:
    """A session token for `user_id`, made directly (tests of sign-in itself go through `login`)."""
    async with school_scope(db, school.id) as session:
        token, _ = await start_session(session, school_id=school.id, user_id=user_id, policy=POLICY)
    return token


async def make_api_token(db: Database, school: SchoolFixture, scopes: list[ApiScope] | None = None) -> str:
    async with school_scope(db, school.id) as session:
        secret, _ = await create_api_token(
            session,
            school_id=school.id,
            actor=Actor(id=school.admin_id, label="admin"),
            name="Roster sync",
            scopes=scopes or [ApiScope.ROSTER_READ],
        )
    return secret


@pytest.fixture
async def school(owner_engine: AsyncEngine, db: Database) -> SchoolFixture:
    return await make_school(owner_engine, db)


async def graphql(
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    keep_cookies: bool = False,
) -> dict[str, Any]:
    """POST one operation; like an API client, it keeps no session cookie unless asked to."""
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    if not keep_cookies:
        http.cookies.clear()
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
