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

from db.audit import Actor
from db.engine import Database

_BIND = text("select set_config('app.school_id', :school_id, true)")
# The actor names whoever makes this transaction's changes in the change feed (migration 0016's triggers read
# it): set with the school, in the same statement, for the transaction only.
_BIND_ACTING = text(
    "select set_config('app.school_id', :school_id, true), set_config('app.actor', :actor, true)"
)
_BIND_SLUG = text("select set_config('app.school_slug', :slug, true)")


async def bind_school(session: AsyncSession, school_id: uuid.UUID, actor: Actor | None = None) -> None:
    """Bind the school to the transaction; `actor`, when given, is who the change feed says made its changes."""
    if actor is None:
        await session.execute(_BIND, {"school_id": str(school_id)})
    else:
        await session.execute(_BIND_ACTING, {"school_id": str(school_id), "actor": actor.feed_label[:200]})


async def bind_school_slug(session: AsyncSession, slug: str) -> None:
    """Lets this transaction see the one school with exactly this slug (for sign-in), nothing more."""
    await session.execute(_BIND_SLUG, {"slug": slug})


@asynccontextmanager
async def school_scope(
    db: Database, school_id: uuid.UUID, actor: Actor | None = None
) -> AsyncIterator[AsyncSession]:
    """One transaction bound to `school_id` (and, for one that writes, to its `actor`); committed on success,
    rolled back on any error."""
    async with db.sessionmaker() as session, session.begin():
        await bind_school(session, school_id, actor)
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

    def __init__(
        self,
        db: Database,
        school_id: uuid.UUID,
        first: AsyncSession | None = None,
        actor: Actor | None = None,
    ) -> None:
        # The first transaction has its actor bound already, by the caller lookup (rollcall_caller); later
        # ones bind `actor` with the school, for the change feed.
        self.db, self.school_id, self.first, self.actor = db, school_id, first, actor

    @asynccontextmanager
    async def scope(self) -> AsyncIterator[AsyncSession]:
        """A transaction bound to the school; committed on success, rolled back on any error."""
        first, self.first = self.first, None
        if first is None:
            async with school_scope(self.db, self.school_id, self.actor) as session:
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
