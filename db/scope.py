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
