"""Audit events: written in the same transaction as the change they describe."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import DomainError, ErrorCode, Problem
from db.models import AuditEvent
from db.pagination import decode_cursor, encode_cursor, page_size


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is making a change, as the audit log will name them."""

    id: uuid.UUID | None
    label: str
    request_id: str | None = None

    @property
    def feed_label(self) -> str:
        """How the change feed names this actor: ids only (a person's label is their username)."""
        return f"user:{self.id}" if self.id is not None else self.label


async def record_by(
    session: AsyncSession,
    actor: Actor,
    *,
    school_id: uuid.UUID,
    action: str,
    targets: Iterable[uuid.UUID] = (),
    summary: dict[str, Any] | None = None,
) -> None:
    """One audit event: `actor` did `action` to `targets`, in the caller's transaction."""
    session.add(
        AuditEvent(
            school_id=school_id,
            actor_id=actor.id,
            actor_label=actor.label,
            action=action,
            target_user_ids=list(targets),
            summary=summary or {},
            request_id=actor.request_id,
        )
    )
    await session.flush()


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[AuditEvent]
    cursors: list[str]
    has_next_page: bool


async def list_events(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    action: str | None = None,
    user_id: uuid.UUID | None = None,
    first: int | None = None,
    after: str | None = None,
) -> AuditPage:
    """Newest first; `user_id` matches the actor or any target."""
    size = page_size(first)
    query = select(AuditEvent).where(AuditEvent.school_id == school_id)
    if action:
        if "\x00" in action:
            raise DomainError(
                Problem(ErrorCode.INVALID_INPUT, "An action cannot contain a NUL character.", "action")
            )
        query = query.where(AuditEvent.action == action)
    if user_id is not None:
        query = query.where(
            or_(AuditEvent.actor_id == user_id, AuditEvent.target_user_ids.contains([user_id]))
        )
    if after is not None:
        created, last_id = decode_cursor(after, parse=(datetime.fromisoformat, uuid.UUID))
        query = query.where(
            tuple_(AuditEvent.created_at, AuditEvent.id) < tuple_(literal(created), literal(last_id))
        )
    events = list(
        (
            await session.execute(
                query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(size + 1)
            )
        ).scalars()
    )
    page = events[:size]
    return AuditPage(
        events=page,
        cursors=[encode_cursor([e.created_at.isoformat(), str(e.id)]) for e in page],
        has_next_page=len(events) > size,
    )
