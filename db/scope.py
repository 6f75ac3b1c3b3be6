"""Binding a school to a transaction, so PostgreSQL row-level security applies.

The school is set with `set_config(..., true)`: local to the transaction, so a pooled connection never
carries one school's scope into the next request.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import Database

_BIND = text("select set_config('app.school_id', :school_id, true)")
_BIND_SLUG = text("select set_config('app.school_slug', :slug, true)")


async def bind_school(session: AsyncSession, school_id: uuid.UUID) -> None:
    await session.execute(_BIND, {"school_id": str(school_id)})


async def bind_school_slug(session: AsyncSession, slug: str) -> None:
    """Lets this transaction see the one school with exactly this slug (for sign-in), nothing more."""
    await session.execute(_BIND_SLUG, {"slug": slug})


@asynccontextmanager
async def school_scope(db: Database, school_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
    """One transaction bound to `school_id`; committed on success, rolled back on any error."""
    async with db.sessionmaker() as session, session.begin():
        await bind_school(session, school_id)
        yield session


@asynccontextmanager
async def unbound_scope(db: Database) -> AsyncIterator[AsyncSession]:
    """One transaction with no school bound: tenant tables read as empty until something is bound."""
    async with db.sessionmaker() as session, session.begin():
        yield session


class SchoolTransactions:
    """The transactions of one request in one school, each bound to it.

    The first may be handed in already open with the school bound: the transaction the caller was found in,
    holding no row lock (tenants.callers.caller_and_transaction). The request's first `scope()` then runs in
    it, one checkout and one round trip fewer than a `school_scope` of its own; every later one is a fresh
    `school_scope`. `finish()` ends the first if nothing took it: call it when the request's work is done.
    """

    def __init__(self, db: Database, school_id: uuid.UUID, first: AsyncSession | None = None) -> None:
        self.db, self.school_id, self.first = db, school_id, first

    @asynccontextmanager
    async def scope(self) -> AsyncIterator[AsyncSession]:
        """A transaction bound to the school; committed on success, rolled back on any error."""
        first, self.first = self.first, None
        if first is None:
            async with school_scope(self.db, self.school_id) as session:
                yield session
            return
        try:
            try:
                yield first
            except BaseException:
                await first.rollback()
                raise
            await first.commit()
        finally:
            await first.close()

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[AsyncSession]:
        """The first transaction for a read that leaves it open for `scope()` (a fresh one when there is
        none); an error ends it, as it would end any transaction."""
        if self.first is None:
            async with school_scope(self.db, self.school_id) as session:
                yield session
            return
        try:
            yield self.first
        except BaseException:
            await self.finish()
            raise

    async def finish(self) -> None:
        """Ends the first transaction if no `scope()` has taken it."""
        first, self.first = self.first, None
        if first is not None:
            try:
                await first.commit()
            finally:
                await first.close()
