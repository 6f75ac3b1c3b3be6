"""The application role's connection pool."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


class Database:
    """One engine and session factory per process, connected as the application role."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        # Statement parameters hold password hashes, passwords from uploaded files and tokens: errors and
        # statement logging never show them.
        self.engine: AsyncEngine = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800,
            hide_parameters=True,
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    async def dispose(self) -> None:
        await self.engine.dispose()
