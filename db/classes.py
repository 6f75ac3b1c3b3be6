"""Classes: each user is in at most one registration class and any number of teaching classes."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ClassMembership, SchoolClass


async def classes_of_users(session: AsyncSession, *, school_id: uuid.UUID,
                           user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[SchoolClass]]:
    """Every class of each user, in one statement, ordered by kind then name."""
    rows = await session.execute(
        select(ClassMembership.user_id, SchoolClass)
        .join(SchoolClass, (SchoolClass.school_id == ClassMembership.school_id)
              & (SchoolClass.id == ClassMembership.class_id))
        .where(ClassMembership.school_id == school_id, ClassMembership.user_id.in_(user_ids))
        .order_by(SchoolClass.kind, SchoolClass.name, SchoolClass.id)
    )
    found: dict[uuid.UUID, list[SchoolClass]] = defaultdict(list)
    for user_id, school_class in rows:
        found[user_id].append(school_class)
    return found
