"""The application role's connection pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import greenlet_spawn

T = TypeVar("T")

# Connection poolers Rollcall can run behind, by the value of ROLLCALL_DB_POOLER.
POOLERS = ("pgbouncer",)


def _unnamed_statement() -> str:
    return ""


def pooler_connect_args(pooler: str | None) -> dict[str, object]:
    """What asyncpg needs behind a transaction-mode pooler (PgBouncer with `pool_mode = transaction`), which
    hands each transaction, even each lone statement, whichever server connection is free: nothing may
    outlive the statement that made it. So no statement cache (SQLAlchemy's or asyncpg's), and every
    statement the unnamed one: it is parsed again, with its Bind and Execute, in the same round trip (asyncpg
    does so when its cache is off), and replaced by the next, so no named prepared statement piles up on a
    server connection or clashes with another client's of the same name. The cost: two round trips a
    statement instead of one, and PostgreSQL plans every statement afresh."""
    if pooler is None:
        return {}
    if pooler not in POOLERS:
        raise ValueError(f"unknown connection pooler {pooler!r}; known: {', '.join(POOLERS)}")
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unnamed_statement,
    }


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


def connections_kept(pool_size: int) -> int:
    """The most connections one worker's pool opens, and keeps open once made, for ROLLCALL_POOL_SIZE."""
    return 2 * pool_size


class Database:
    """One engine and session factory per process, connected as the application role."""

    def __init__(self, url: str, *, pool_size: int = 10, pooler: str | None = None) -> None:
        # No pre-ping: it would cost a round trip on every checkout. A connection that has gone (a database
        # restart) is found when it fails; the pool is then renewed, and retry_if_disconnected tries again.
        # Statement parameters hold password hashes, passwords from uploaded files and tokens: errors and
        # statement logging never show them. Behind a transaction-mode pooler (`pooler`), no statement outlives
        # its round trip (pooler_connect_args); everything else already holds there: the school is bound with
        # set_config(..., true), local to the transaction, and nothing takes a session-level lock, LISTENs,
        # makes a temporary table or SETs anything for the session.
        # Up to connections_kept(pool_size), every one kept open once made: a pool that closed its overflow as
        # it came back opened and closed a PostgreSQL backend every few requests under load (a fork and an
        # authentication each; 67 in 4 s of the roster page at 20 connections), a tail on p99 and CPU lost.
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=connections_kept(pool_size),
            max_overflow=0,
            pool_recycle=1800,
            hide_parameters=True,
            connect_args=pooler_connect_args(pooler),
        )
        # The same pool, for single statements that need no transaction around them (no BEGIN, no COMMIT).
        self.autocommit: AsyncEngine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._pool = self.engine.sync_engine.pool

    async def statement(self, sql: str, *args: Any) -> list[Any]:
        """The rows of ONE statement run over asyncpg itself on a connection of the pool, autocommitted (it is
        its own transaction): for the hot paths whose whole work is one SQL function (sign-in), with none of the
        engine's, the ORM's or the driver adapter's work around it. Its parameters are asyncpg's ($1, $2, ...).

        The connection is checked out of the pool and back in directly (with the pool's own events: a new
        connection is set up as the engine sets any up): no adapter transaction is ever begun on it, so asyncpg
        runs the statement as its own. A connection already known to be gone (its server ended it: a restart)
        is dropped before anything is sent, and another taken. One lost while the statement is under way is
        dropped and the failure raised, never retried: the statement may have committed before its answer was
        lost, and a sign-in's statements must not run twice (an attempt counted twice, a session opened twice).
        """
        for _ in range(self._pool.size() + 1):  # type: ignore[attr-defined]
            pooled = await greenlet_spawn(self._pool.connect)
            try:
                connection = pooled.driver_connection
                assert connection is not None, "a pooled connection has its driver's connection"
                if connection.is_closed():
                    pooled.invalidate()
                    continue
                return cast(list[Any], await connection.fetch(sql, *args))
            except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError) as error:
                pooled.invalidate(error)
                raise
            finally:
                await greenlet_spawn(pooled.close)
        raise asyncpg.ConnectionDoesNotExistError("every connection of the pool had gone")

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
