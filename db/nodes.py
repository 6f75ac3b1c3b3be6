"""Finding rows by id alone: the tables whose ids a client may ask for without saying what they are.

Ids are UUIDs, unique across these tables, so an id names at most one row; the school scope (row-level
security) and the `school_id` condition keep the search within one school.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.maintenance import STALE_IMPORT, fail_stale_imports_of
from db.models import ApiToken, AuditEvent, ImportJob, SchoolClass, User

Row = User | SchoolClass | ImportJob | AuditEvent | ApiToken
TABLES: tuple[type[Row], ...] = (User, SchoolClass, ImportJob, AuditEvent, ApiToken)


async def rows_by_id(
    session: AsyncSession, *, school_id: uuid.UUID, ids: Sequence[uuid.UUID], tables: Iterable[type[Row]]
) -> dict[uuid.UUID, Row]:
    """The rows of the school with these ids, looked for in `tables` only: one statement a table."""
    found: dict[uuid.UUID, Row] = {}
    wanted = list(dict.fromkeys(ids))
    for table in tables:
        missing = [id_ for id_ in wanted if id_ not in found]
        if not missing:
            break
        if table is ImportJob:
            # As when a job is read by its own field: one left RUNNING by a worker that died is failed first.
            await fail_stale_imports_of(session, school_id, older_than=STALE_IMPORT)
        rows = await session.execute(select(table).where(table.school_id == school_id, table.id.in_(missing)))
        found.update({row.id: row for row in cast("list[Row]", rows.scalars().all())})
    return found
