"""Audit events: written in the same transaction as the change they describe."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent


async def record(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    actor_label: str,
    action: str,
    targets: Iterable[uuid.UUID] = (),
    summary: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    session.add(AuditEvent(
        school_id=school_id, actor_id=actor_id, actor_label=actor_label, action=action,
        target_user_ids=list(targets), summary=summary or {}, request_id=request_id,
    ))
    await session.flush()
