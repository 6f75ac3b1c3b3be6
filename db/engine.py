"""The application role's connection pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

T = TypeVar("T")


def owner_engine(owner_url: str) -> AsyncEngine:
    """An engine as the tables' owner (migrations, maintenance, the CLI); like the application's, it never
    shows statement parameters (hashes, typed passwords) in an error."""
    return create_async_engine(owner_url, hide_parameters=True)


@asynccontextmanager
async def owner_engine_in_use(owner_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions as the tables' owner, on an engine of their own that is disposed of afterwards."""
    engine = owner_engine(owner_url)
    try:
        yield async_sessionmaker(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def owner_transaction(owner_url: str) -> AsyncIterator[AsyncSession]:
    """One transaction as the tables' owner (a CLI command), committed when the block ends without error."""
    async with owner_engine_in_use(owner_url) as sessions, sessions() as session, session.begin():
        yield session


class Database:
    """One engine and session factory per process, connected as the application role."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        # No pre-ping: it would cost a round trip on every checkout. A connection that has gone (a database
        # restart) is found when it fails; the pool is then renewed, and retry_if_disconnected tries again.
        # Statement parameters hold password hashes, passwords from uploaded files and tokens: errors and
        # statement logging never show them.
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            hide_parameters=True,
        )
        # The same pool, for single statements that need no transaction around them (no BEGIN, no COMMIT).
        self.autocommit: AsyncEngine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    async def dispose(self) -> None:
        await self.engine.dispose()


async def retry_if_disconnected(work: Callable[[], Awaitable[T]]) -> T:
    """`work`, and once more on a fresh connection if it failed because its pooled connection had gone."""
    try:
        return await work()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    return await work()
