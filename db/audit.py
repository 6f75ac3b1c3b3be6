"""Audit events: written in the same transaction as the change they describe.

Every action is a name of `AuditAction`: `<thing>.<what happened to it>`, the thing in the singular even
when one event names many users. The log is append-only, so events written under the older names (such as
`users.deleted`) stay as they are and are read under the current ones (`LEGACY_ACTIONS`).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent
from db.pagination import decode_cursor, encode_cursor, page_size
from db.text import offset_time


class AuditAction(enum.StrEnum):
    """What an audit event records; the value is what the log stores."""

    SCHOOL_CREATED = "school.created"
    SCHOOL_SETTINGS_CHANGED = "school.settings_changed"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    USER_RESTORED = "user.restored"
    USER_PURGED = "user.purged"
    USER_SIGNED_IN = "user.signed_in"
    USER_PASSWORD_CHANGED = "user.password_changed"
    USER_PASSWORD_RESET = "user.password_reset"
    USER_PASSWORD_SET = "user.password_set"
    USER_DEPROVISIONED = "user.deprovisioned"
    LOGIN_CODE_ROTATED = "login_code.rotated"
    LOGIN_CARD_PRINTED = "login_card.printed"
    CLASS_CREATED = "class.created"
    CLASS_RENAMED = "class.renamed"
    CLASS_UPDATED = "class.updated"
    CLASS_DELETED = "class.deleted"
    CLASS_KIND_CHANGED = "class.kind_changed"
    CLASS_MEMBERS_ADDED = "class.members_added"
    CLASS_MEMBERS_MOVED = "class.members_moved"
    CLASS_MEMBERS_REMOVED = "class.members_removed"
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked"
    IMPORT_PREVIEWED = "import.previewed"
    IMPORT_PASSWORDS_TAKEN = "import.generated_passwords_taken"
    ROLLOVER_PLANNED = "rollover.planned"
    ROLLOVER_APPLIED = "rollover.applied"
    ROLLOVER_REVERTED = "rollover.reverted"


# Names written before every action followed one scheme; such events keep them and are read as these.
LEGACY_ACTIONS: dict[str, AuditAction] = {
    "users.created": AuditAction.USER_CREATED,
    "users.updated": AuditAction.USER_UPDATED,
    "users.deleted": AuditAction.USER_DELETED,
    "users.restored": AuditAction.USER_RESTORED,
    "users.purged": AuditAction.USER_PURGED,
    "passwords.reset": AuditAction.USER_PASSWORD_RESET,
    "login_codes.rotated": AuditAction.LOGIN_CODE_ROTATED,
    "login_cards.printed": AuditAction.LOGIN_CARD_PRINTED,
}


def action_of(stored: str) -> AuditAction:
    """The action an event records, whichever name it was written under."""
    return LEGACY_ACTIONS.get(stored) or AuditAction(stored)


def stored_names(action: AuditAction) -> list[str]:
    """Every name events of this action may be stored under."""
    return [action.value, *(name for name, current in LEGACY_ACTIONS.items() if current == action)]


def _camel(key: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda match: match.group(1).upper(), key)


def summary_of(stored: Any) -> Any:
    """An event's summary with every key in camelCase, as GraphQL names things, whichever way it was written."""
    if isinstance(stored, dict):
        return {_camel(key): summary_of(value) for key, value in stored.items()}
    if isinstance(stored, list):
        return [summary_of(item) for item in stored]
    return stored


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
    action: AuditAction,
    targets: Iterable[uuid.UUID] = (),
    summary: dict[str, Any] | None = None,
) -> None:
    """One audit event: `actor` did `action` to `targets`, in the caller's transaction."""
    session.add(
        AuditEvent(
            school_id=school_id,
            actor_id=actor.id,
            actor_label=actor.label,
            action=AuditAction(action).value,
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
    action: AuditAction | None = None,
    user_id: uuid.UUID | None = None,
    first: int | None = None,
    after: str | None = None,
) -> AuditPage:
    """Newest first; `user_id` matches the actor or any target."""
    size = page_size(first)
    query = select(AuditEvent).where(AuditEvent.school_id == school_id)
    if action is not None:
        query = query.where(AuditEvent.action.in_(stored_names(action)))
    if user_id is not None:
        query = query.where(
            or_(AuditEvent.actor_id == user_id, AuditEvent.target_user_ids.contains([user_id]))
        )
    if after is not None:
        created, last_id = decode_cursor(after, parse=(offset_time, uuid.UUID))
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
