"""Maintenance run by the owner role across every school: the retention purge (deleted users, and change feed
records), failing stale imports, and forgetting the typed passwords of import previews that have expired.

RLS stays on: each school is bound in turn, as for any request; only the list of schools is the owner's.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple, TypeVar

from sqlalchemy import delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.changes import purge_changes
from db.engine import owner_engine_in_use
from db.models import ApiToken, AuditEvent, ImportJob, ImportStatus, School, User
from db.scope import bind_school

T = TypeVar("T")

MAINTENANCE = Actor(id=None, label="rollcall maintenance")
# A running import writes its progress, or at least this heartbeat, this often (db.imports.jobs.ProgressWriter).
IMPORT_HEARTBEAT = timedelta(seconds=15)
# An import whose heartbeat has stopped for this long has lost its worker: failed when it is read.
STALE_IMPORT = timedelta(minutes=5)
STALE_REASON = "The server stopped while this import was running; nothing was changed. Upload the file again."
# How long after an import ends the admin who confirmed it may take the passwords it generated (once).
GENERATED_PASSWORDS_KEPT = timedelta(hours=1)
# Keys of audit summaries that can hold a person's name or username.
PERSONAL_KEYS = ("username", "first_name", "surname", "name", "from", "to")


@dataclass(frozen=True, slots=True)
class Purged:
    school_slug: str
    users: int
    import_passwords: (
        int  # expired previews whose typed passwords, and ended imports whose generated ones, went
    )
    changes: int = 0  # change feed records older than the school's feed retention


class SchoolRow(NamedTuple):
    id: uuid.UUID
    slug: str
    deleted_user_retention_days: int
    feed_retention_days: int


async def in_every_school(owner_url: str, work: Callable[[AsyncSession, SchoolRow], Awaitable[T]]) -> list[T]:
    """Run `work` for each school in turn (by slug), each in its own transaction with the school bound; what
    each returned. Only the list of schools is read as the owner sees it."""
    async with owner_engine_in_use(owner_url) as sessions:
        async with sessions() as session, session.begin():
            rows = await session.execute(
                select(
                    School.id, School.slug, School.deleted_user_retention_days, School.feed_retention_days
                ).order_by(School.slug)
            )
            schools = [SchoolRow(*row) for row in rows]
        done = []
        for school in schools:
            async with sessions() as session, session.begin():
                await bind_school(session, school.id, MAINTENANCE)
                done.append(await work(session, school))
        return done


async def fail_stale_imports(owner_url: str, *, older_than: timedelta = timedelta(0)) -> int:
    """Mark FAILED the imports left RUNNING by a worker that died (at start-up: all that are not moving)."""
    counts = await in_every_school(
        owner_url, lambda session, school: fail_stale_imports_of(session, school.id, older_than=older_than)
    )
    return sum(counts)


async def forget_expired_import_passwords(owner_url: str) -> int:
    """At start-up: remove the typed passwords of every expired import preview."""
    counts = await in_every_school(
        owner_url, lambda session, school: forget_expired_import_passwords_of(session, school.id)
    )
    return sum(counts)


async def forget_expired_import_passwords_of(session: AsyncSession, school_id: uuid.UUID) -> int:
    """An expired preview can no longer be confirmed, so the passwords typed into its file go; so do the
    generated passwords of an import that ended more than GENERATED_PASSWORDS_KEPT ago, no longer takeable."""
    result = await session.execute(
        update(ImportJob)
        .where(
            ImportJob.school_id == school_id,
            ImportJob.sealed_passwords.is_not(None),
            ImportJob.expires_at <= func.now(),
        )
        .values(sealed_passwords=None, updated_at=func.now())
    )
    generated = await session.execute(
        update(ImportJob)
        .where(
            ImportJob.school_id == school_id,
            ImportJob.sealed_generated_passwords.is_not(None),
            ImportJob.finished_at <= func.now() - GENERATED_PASSWORDS_KEPT,
        )
        .values(sealed_generated_passwords=None, updated_at=func.now())
    )
    return int(result.rowcount) + int(generated.rowcount)  # type: ignore[attr-defined]


async def fail_stale_imports_of(session: AsyncSession, school_id: uuid.UUID, *, older_than: timedelta) -> int:
    result = await session.execute(
        update(ImportJob)
        .where(
            ImportJob.school_id == school_id,
            ImportJob.status == ImportStatus.RUNNING,
            ImportJob.updated_at < func.now() - older_than,
        )
        .values(
            status=ImportStatus.FAILED,
            failure_reason=STALE_REASON,
            sealed_passwords=None,
            finished_at=func.now(),
            updated_at=func.now(),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge(owner_url: str, *, older_than: timedelta | None = None) -> list[Purged]:
    """Hard-delete users soft-deleted longer than each school's retention period (or `older_than`), remove the
    change feed's records older than the school's feed retention, and the typed passwords of expired import
    previews."""

    async def purge_one(session: AsyncSession, school: SchoolRow) -> Purged:
        # `is None`, not `or`: a zero age ("0d", purge every deleted user now) is falsy.
        age = timedelta(days=school.deleted_user_retention_days) if older_than is None else older_than
        count = await purge_school(session, school.id, age)
        forgotten = await forget_expired_import_passwords_of(session, school.id)
        # After the users: the purge's own records (their DELETEs) are new, and stay.
        changes = await purge_changes(session, school.id, timedelta(days=school.feed_retention_days))
        return Purged(school.slug, count, forgotten, changes)

    return await in_every_school(owner_url, purge_one)


async def purge_school(session: AsyncSession, school_id: uuid.UUID, older_than: timedelta) -> int:
    doomed = list(
        (
            await session.execute(
                select(User.id).where(User.school_id == school_id, User.deleted_at < func.now() - older_than)
            )
        ).scalars()
    )
    if not doomed:
        return 0
    # The audit log keeps what happened, but no longer who these people were.
    await session.execute(
        update(AuditEvent)
        .where(AuditEvent.school_id == school_id, AuditEvent.actor_id.in_(doomed))
        .values(actor_label="(removed user)")
    )
    scrubbed = AuditEvent.summary
    for key in PERSONAL_KEYS:
        scrubbed = scrubbed.op("-")(literal(key))  # type: ignore[assignment]
    await session.execute(
        update(AuditEvent)
        .where(
            AuditEvent.school_id == school_id,
            or_(AuditEvent.target_user_ids.overlap(doomed), AuditEvent.actor_id.in_(doomed)),
        )
        .values(summary=scrubbed)
    )
    await session.execute(
        delete(ApiToken).where(ApiToken.school_id == school_id, ApiToken.created_by.in_(doomed))
    )
    await session.execute(
        update(User).where(User.school_id == school_id, User.deleted_by.in_(doomed)).values(deleted_by=None)
    )
    # Memberships and sessions go with the user (ON DELETE CASCADE).
    await session.execute(delete(User).where(User.school_id == school_id, User.id.in_(doomed)))
    await audit.record_by(
        session,
        MAINTENANCE,
        school_id=school_id,
        action=AuditAction.USER_PURGED,
        summary={"count": len(doomed), "older_than_days": older_than.days},
    )
    return len(doomed)


def parse_age(value: str) -> timedelta:
    """'30d', '12h' or '90' (days); '0d' is every deleted user, however recently deleted."""
    value = value.strip().lower()
    units = {"d": "days", "h": "hours", "w": "weeks"}
    try:
        if value and value[-1] in units:
            age = timedelta(**{units[value[-1]]: int(value[:-1])})
        else:
            age = timedelta(days=int(value))
    except ValueError:
        raise ValueError(f"'{value}' is not an age such as 30d, 12h or 2w.") from None
    if age < timedelta(0):
        raise ValueError(f"'{value}' is not an age such as 30d, 12h or 2w: an age is not negative.")
    return age
