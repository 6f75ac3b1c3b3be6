"""Schools (tenants): creating one with its first admin, reading the bound one, and its own settings."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.errors import DomainError, ErrorCode, Problem, unique_or
from db.login_cards.codes import is_day_of_year
from db.models import Provider, School, UserType
from db.names import SCHOOL_NAME_MAX
from db.passwords import hash_password_async, weak_password
from db.scope import bind_school, bind_school_slug
from db.text import shown
from db.users import clean_name, clean_username, create_user

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
PUPIL_MIN_PASSWORD_LENGTHS = range(1, 65)
RETENTION_DAYS = range(1, 3651)
SLUG_INDEX = "uq_schools_slug"
CREATED_BY = Actor(id=None, label="rollcall school create")


@dataclass(frozen=True, slots=True)
class NewSchool:
    school_id: uuid.UUID
    admin_id: uuid.UUID


def clean_slug(raw: str) -> str:
    slug = raw.strip()
    if not SLUG.fullmatch(slug):
        raise DomainError(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"'{shown(raw)}' is not a valid slug: use 1 to 63 lowercase letters, digits and dashes, "
                "starting and ending with a letter or digit.",
                "slug",
            )
        )
    return slug


def _slug_taken(slug: str) -> DomainError:
    return DomainError(
        Problem(ErrorCode.SLUG_TAKEN, f"A school with the slug '{slug}' already exists.", "slug")
    )


async def school_id_for_slug(session: AsyncSession, slug: str) -> uuid.UUID | None:
    """The id of the school with exactly this slug; the transaction sees no other school."""
    if not SLUG.fullmatch(slug):
        return None  # no school has it, and it may hold what PostgreSQL cannot store (NUL)
    await bind_school_slug(session, slug)
    return (await session.execute(select(School.id).where(School.slug == slug))).scalar_one_or_none()


async def get_school(session: AsyncSession, school_id: uuid.UUID) -> School | None:
    return await session.get(School, school_id)


async def create_school(
    session: AsyncSession,
    *,
    slug: str,
    name: str,
    provider: Provider = Provider.MANUAL,
    admin_username: str,
    admin_password: str,
    admin_first_name: str = "",
    admin_surname: str = "",
) -> NewSchool:
    """Create a school and its first admin in the caller's (unbound) transaction; all or nothing."""
    slug = clean_slug(slug)
    name = name.strip()
    if not name or len(name) > SCHOOL_NAME_MAX:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, f"A school's name is 1 to {SCHOOL_NAME_MAX} characters.", "name")
        )
    username = clean_username(admin_username, field="admin_username")
    if weak := weak_password(admin_password, staff=True, pupil_min_length=4, field="admin_password"):
        raise DomainError(*weak)
    if await school_id_for_slug(session, slug) is not None:
        raise _slug_taken(slug)

    school_id = uuid.uuid4()
    await bind_school(session, school_id, CREATED_BY)
    async with unique_or(session, {SLUG_INDEX: lambda: _slug_taken(slug)}):
        session.add(School(id=school_id, slug=slug, name=name, provider=provider))
    admin = await create_user(
        session,
        school_id=school_id,
        username=username,
        password_hash=await hash_password_async(admin_password),
        type=UserType.TEACHER,
        is_admin=True,
        first_name=clean_name(admin_first_name, field="admin_first_name"),
        surname=clean_name(admin_surname, field="admin_surname"),
    )
    await audit.record_by(
        session,
        CREATED_BY,
        school_id=school_id,
        action=AuditAction.SCHOOL_CREATED,
        targets=[admin.id],
        summary={"slug": slug, "name": name},
    )
    return NewSchool(school_id=school_id, admin_id=admin.id)


async def require_manual_school(session: AsyncSession, school_id: uuid.UUID) -> School:
    """The bound school, when its users are managed here; a managed school's users come from its provider."""
    school = await session.get_one(School, school_id)
    if school.provider != Provider.MANUAL:
        raise DomainError(
            Problem(
                ErrorCode.MANAGED_BY_PROVIDER,
                f"This school's users are managed by {school.provider.value}; change them there.",
            )
        )
    return school


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """The settings to change, by column; None leaves one as it is."""

    pupil_min_password_length: int | None = None
    qr_sign_in_enabled: bool | None = None
    school_year_end_month: int | None = None
    school_year_end_day: int | None = None
    deleted_user_retention_days: int | None = None
    teachers_can_reset_pupil_passwords: bool | None = None
    feed_retention_days: int | None = None


def _out_of(allowed: range, value: int | None, what: str, field: str) -> list[Problem]:
    if value is None or value in allowed:
        return []
    return [Problem(ErrorCode.INVALID_INPUT, f"{what} is {allowed.start} to {allowed.stop - 1}.", field)]


async def update_settings(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, change: SettingsChange
) -> School:
    """Change the school's own settings, all of them or none; the audit log keeps the old and new values.

    Allowed in managed schools too: these are Rollcall's settings, not the provider's. A new pupil minimum
    applies to passwords set from now on; passwords already set keep working.
    """
    # The lock the roster's changes take first, so a reset and a new minimum cannot cross.
    school = (
        await session.execute(select(School).where(School.id == school_id).with_for_update(key_share=True))
    ).scalar_one()
    problems = [
        *_out_of(
            PUPIL_MIN_PASSWORD_LENGTHS,
            change.pupil_min_password_length,
            "A pupil's minimum password length",
            "pupilMinPasswordLength",
        ),
        *_out_of(
            RETENTION_DAYS,
            change.deleted_user_retention_days,
            "How many days deleted users are kept",
            "deletedUserRetentionDays",
        ),
        *_out_of(
            RETENTION_DAYS,
            change.feed_retention_days,
            "How many days the change feed is kept",
            "feedRetentionDays",
        ),
    ]
    if change.school_year_end_month is not None or change.school_year_end_day is not None:
        month = (
            school.school_year_end_month
            if change.school_year_end_month is None
            else change.school_year_end_month
        )
        day = school.school_year_end_day if change.school_year_end_day is None else change.school_year_end_day
        if not is_day_of_year(month, day):
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"Month {month}, day {day} is not a day of the year.",
                    "schoolYearEndDay" if change.school_year_end_day is not None else "schoolYearEndMonth",
                )
            )
    if problems:
        raise DomainError(*problems)
    changes: dict[str, Any] = {}
    for setting in fields(change):
        new, old = getattr(change, setting.name), getattr(school, setting.name)
        if new is not None and new != old:
            changes[setting.name] = {"from": old, "to": new}
            setattr(school, setting.name, new)
    if changes:
        await session.flush()
        # Nested under "changes": the purge scrubs top-level "from"/"to", which elsewhere hold names.
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.SCHOOL_SETTINGS_CHANGED,
            summary={"changes": changes},
        )
    return school
