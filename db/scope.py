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
