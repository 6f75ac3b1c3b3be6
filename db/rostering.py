"""The roster as OneRoster 1.2 sees it: a school's users, classes and memberships, with the year they belong to,
as flat rows any roster standard can read (the OneRoster surface, oneroster/, shapes them into its JSON).

The mapping (README, "OneRoster"):

- the school is one org of type `school` (its sourcedId is the school's id);
- the school year, ending on the school's year end, is an academic session of type `schoolYear`, with one
  `term` for the same span and one `gradingPeriod` inside that term;
- a registration class is a class of type `homeroom`, a teaching class one of type `scheduled`; each class has
  a course of its own (same title) and the year's term;
- users are users with one primary role (`student` for pupils, `teacher` for teachers) at the school;
- memberships are enrollments (role `student` or `teacher` by the user; the longest-standing teacher of a class
  is its primary teacher);
- soft-deleted users are `tobedeleted` until the retention purge removes them, and so are their enrollments;
  removed memberships are `tobedeleted` enrollments for as long as the change feed keeps their removal.

Every sourcedId is deterministic: the row's own id, or (for what has no row of its own: sessions, courses,
enrollments) an MD5-derived UUID of what it stands for, so a consumer's ids never change. `dateLastModified`
is the latest of the row's own clocks and its latest change feed record, so `dateLastModified > t` finds
every change after `t`.

Each source is a SELECT whose columns are named by the OneRoster field they fill (`course.sourcedId` for a
link), plus hidden columns (`_id`, ...) that the nested endpoints join on. All of them name the school, and
run under its row-level security.
"""

from __future__ import annotations

import calendar
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Date,
    DateTime,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import SQLColumnExpression

from db.models import Change, ClassKind, ClassMembership, School, SchoolClass, User, UserType

# A SELECT of one resource's rows, its columns named by the fields they fill.
Source: TypeAlias = "Select[*tuple[Any, ...]]"


@dataclass(frozen=True, slots=True)
class SchoolYear:
    """The school year a day falls in: from the day after one year end to the next year end, inclusive."""

    start: date
    end: date

    @property
    def label(self) -> str:
        """OneRoster's `schoolYear`: the calendar year the school year ends in."""
        return str(self.end.year)

    @property
    def title(self) -> str:
        return (
            f"{self.start.year}-{self.end.year}" if self.start.year != self.end.year else str(self.end.year)
        )


def _year_end(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def school_year(today: date, end_month: int, end_day: int) -> SchoolYear:
    end = _year_end(today.year, end_month, end_day)
    if today > end:
        end = _year_end(today.year + 1, end_month, end_day)
    start = _year_end(end.year - 1, end_month, end_day) + timedelta(days=1)
    return SchoolYear(start=start, end=end)


def derived_id(*parts: object) -> str:
    """A UUID that stands for what has no row of its own: the same parts, the same id, always. Computed as
    PostgreSQL's `md5(...)::uuid` computes it (`sql_derived_id`)."""
    return str(uuid.UUID(hashlib.md5(":".join(str(part) for part in parts).encode()).hexdigest()))


def sql_derived_id(*parts: SQLColumnExpression[Any] | str) -> ColumnElement[str]:
    text_parts: list[ColumnElement[str]] = []
    for index, part in enumerate(parts):
        if index:
            text_parts.append(literal(":"))
        text_parts.append(literal(part) if isinstance(part, str) else cast(part, String))
    joined = text_parts[0]
    for part in text_parts[1:]:
        joined = joined.concat(part)
    return cast(cast(func.md5(joined), PG_UUID), String)


@dataclass(frozen=True, slots=True)
class SessionIds:
    school_year: str
    term: str
    grading_period: str


def session_ids(school_id: uuid.UUID, year: SchoolYear) -> SessionIds:
    return SessionIds(
        school_year=derived_id("schoolYear", school_id, year.end.isoformat()),
        term=derived_id("term", school_id, year.end.isoformat()),
        grading_period=derived_id("gradingPeriod", school_id, year.end.isoformat()),
    )


@dataclass(frozen=True, slots=True)
class Roster:
    """What every source needs: the school, its year, and the ids of the year's sessions."""

    school_id: uuid.UUID
    year: SchoolYear
    sessions: SessionIds
    school_name: str
    school_slug: str
    school_created_at: datetime
    provider: str


async def roster(session: AsyncSession, school_id: uuid.UUID) -> Roster | None:
    """The school's roster context, in the caller's transaction (None if the school is not visible)."""
    found = (
        await session.execute(
            select(
                School.name,
                School.slug,
                School.created_at,
                School.provider,
                School.school_year_end_month,
                School.school_year_end_day,
                func.current_date(),
            ).where(School.id == school_id)
        )
    ).first()
    if found is None:
        return None
    name, slug, created_at, provider, month, day, today = found
    year = school_year(today, month, day)
    return Roster(
        school_id=school_id,
        year=year,
        sessions=session_ids(school_id, year),
        school_name=name,
        school_slug=slug,
        school_created_at=created_at,
        provider=str(provider),
    )


def _latest_change(
    kind: str, entity: SQLColumnExpression[uuid.UUID], school_id: uuid.UUID
) -> ColumnElement[datetime]:
    return (
        select(func.max(Change.at))
        .where(Change.school_id == school_id, Change.kind == kind, Change.entity_id == entity)
        .scalar_subquery()
    )


def _active() -> ColumnElement[str]:
    return literal("active")


def orgs(r: Roster) -> Source:
    return select(
        cast(literal(r.school_id, PG_UUID), String).label("sourcedId"),
        _active().label("status"),
        literal(r.school_created_at, DateTime(timezone=True)).label("dateLastModified"),
        literal(r.school_name).label("name"),
        literal("school").label("type"),
        literal(r.school_slug).label("identifier"),
    )


def academic_sessions(r: Roster) -> Source:
    ids, year = r.sessions, r.year
    modified = datetime(year.start.year, year.start.month, year.start.day, tzinfo=UTC)
    rows = [
        ("schoolYear", ids.school_year, year.title, None, ids.term),
        ("term", ids.term, year.title, ids.school_year, ids.grading_period),
        ("gradingPeriod", ids.grading_period, f"{year.title} grading period", ids.term, None),
    ]
    return (
        union_all(
            *(
                select(
                    literal(sourced_id).label("sourcedId"),
                    _active().label("status"),
                    literal(modified, DateTime(timezone=True)).label("dateLastModified"),
                    literal(title).label("title"),
                    literal(kind).label("type"),
                    literal(year.start, Date).label("startDate"),
                    literal(year.end, Date).label("endDate"),
                    (null() if parent is None else literal(parent)).label("parent.sourcedId"),
                    (null() if child is None else literal(child)).label("children.sourcedId"),
                    literal(year.label).label("schoolYear"),
                )
                for kind, sourced_id, title, parent, child in rows
            )
        )
        .subquery("academic_sessions")
        .select()
    )


def _class_modified(r: Roster, c: type[SchoolClass]) -> ColumnElement[datetime]:
    return func.greatest(c.created_at, _latest_change("CLASS", c.id, r.school_id))


def courses(r: Roster) -> Source:
    c = SchoolClass
    return select(
        sql_derived_id("course", c.id).label("sourcedId"),
        _active().label("status"),
        _class_modified(r, c).label("dateLastModified"),
        c.name.label("title"),
        c.name.label("courseCode"),
        literal(r.sessions.school_year).label("schoolYear.sourcedId"),
        cast(c.school_id, String).label("org.sourcedId"),
        c.id.label("_class_id"),
    ).where(c.school_id == r.school_id)


def classes(r: Roster) -> Source:
    c = SchoolClass
    return select(
        cast(c.id, String).label("sourcedId"),
        _active().label("status"),
        _class_modified(r, c).label("dateLastModified"),
        c.name.label("title"),
        c.name.label("classCode"),
        case((c.kind == ClassKind.REGISTRATION, "homeroom"), else_="scheduled").label("classType"),
        sql_derived_id("course", c.id).label("course.sourcedId"),
        cast(c.school_id, String).label("school.sourcedId"),
        literal(r.sessions.term).label("terms.sourcedId"),
        c.id.label("_id"),
    ).where(c.school_id == r.school_id)


def _role(user_type: SQLColumnExpression[UserType]) -> ColumnElement[str]:
    return case((user_type == UserType.TEACHER, "teacher"), else_="student")


def users(r: Roster) -> Source:
    u = User
    return select(
        cast(u.id, String).label("sourcedId"),
        case((u.deleted_at.is_(None), "active"), else_="tobedeleted").label("status"),
        func.greatest(u.updated_at, u.deleted_at, _latest_change("USER", u.id, r.school_id)).label(
            "dateLastModified"
        ),
        u.username.label("username"),
        u.deleted_at.is_(None).label("enabledUser"),
        u.first_name.label("givenName"),
        u.surname.label("familyName"),
        # Pupils have none: the key is there, empty, as consumers expect.
        func.coalesce(u.email, "").label("email"),
        u.external_id.label("identifier"),
        literal(r.provider).label("userIds.type"),
        u.external_id.label("userIds.identifier"),
        _role(u.type).label("roles.role"),
        literal("primary").label("roles.roleType"),
        cast(u.school_id, String).label("roles.org.sourcedId"),
        cast(u.school_id, String).label("primaryOrg.sourcedId"),
        u.id.label("_id"),
    ).where(u.school_id == r.school_id)


def enrollments(r: Roster) -> Source:
    m, u = ClassMembership, User
    first_teacher = (
        select(ClassMembership.user_id)
        .join(User, and_(User.school_id == ClassMembership.school_id, User.id == ClassMembership.user_id))
        .where(
            ClassMembership.school_id == r.school_id,
            ClassMembership.class_id == m.class_id,
            User.type == UserType.TEACHER,
            User.deleted_at.is_(None),
        )
        .order_by(ClassMembership.created_at, ClassMembership.user_id)
        .limit(1)
        .correlate(m)
        .scalar_subquery()
    )
    latest_membership_change = (
        select(func.max(Change.at))
        .where(
            Change.school_id == r.school_id,
            Change.kind == "MEMBERSHIP",
            Change.entity_id == m.user_id,
            Change.class_id == m.class_id,
        )
        .scalar_subquery()
    )
    current = (
        select(
            sql_derived_id("enrollment", m.class_id, m.user_id).label("sourcedId"),
            case((u.deleted_at.is_(None), "active"), else_="tobedeleted").label("status"),
            func.greatest(m.created_at, u.updated_at, u.deleted_at, latest_membership_change).label(
                "dateLastModified"
            ),
            _role(u.type).label("role"),
            and_(u.type == UserType.TEACHER, first_teacher == m.user_id).label("primary"),
            cast(m.user_id, String).label("user.sourcedId"),
            cast(m.class_id, String).label("class.sourcedId"),
            cast(m.school_id, String).label("school.sourcedId"),
            m.user_id.label("_user_id"),
            m.class_id.label("_class_id"),
        )
        .join(u, and_(u.school_id == m.school_id, u.id == m.user_id))
        .where(m.school_id == r.school_id)
    )
    gone_user = aliased(User)
    removed_pairs = (
        select(Change.entity_id, Change.class_id, func.max(Change.at).label("at"))
        .where(
            Change.school_id == r.school_id,
            Change.kind == "MEMBERSHIP",
            Change.operation == "DELETE",
            ~exists().where(
                ClassMembership.school_id == r.school_id,
                ClassMembership.user_id == Change.entity_id,
                ClassMembership.class_id == Change.class_id,
            ),
        )
        .group_by(Change.entity_id, Change.class_id)
        .subquery("removed")
    )
    removed = select(
        sql_derived_id("enrollment", removed_pairs.c.class_id, removed_pairs.c.entity_id).label("sourcedId"),
        literal("tobedeleted").label("status"),
        removed_pairs.c.at.label("dateLastModified"),
        _role(func.coalesce(gone_user.type, UserType.PUPIL)).label("role"),
        literal(False, Boolean).label("primary"),
        cast(removed_pairs.c.entity_id, String).label("user.sourcedId"),
        cast(removed_pairs.c.class_id, String).label("class.sourcedId"),
        literal(str(r.school_id)).label("school.sourcedId"),
        removed_pairs.c.entity_id.label("_user_id"),
        removed_pairs.c.class_id.label("_class_id"),
    ).outerjoin(
        gone_user, and_(gone_user.school_id == r.school_id, gone_user.id == removed_pairs.c.entity_id)
    )
    return union_all(current, removed).subquery("enrollments").select()


def member_of_class(
    r: Roster, class_id: uuid.UUID
) -> Callable[[ColumnElement[uuid.UUID]], ColumnElement[bool]]:
    """A condition on a user id: a member of this class now."""

    def condition(user_id: ColumnElement[uuid.UUID]) -> ColumnElement[bool]:
        return exists().where(
            ClassMembership.school_id == r.school_id,
            ClassMembership.class_id == class_id,
            ClassMembership.user_id == user_id,
        )

    return condition


def classes_of_user(
    r: Roster, user_id: uuid.UUID
) -> Callable[[ColumnElement[uuid.UUID]], ColumnElement[bool]]:
    """A condition on a class id: one this user is a member of now."""

    def condition(class_id: ColumnElement[uuid.UUID]) -> ColumnElement[bool]:
        return exists().where(
            ClassMembership.school_id == r.school_id,
            ClassMembership.user_id == user_id,
            ClassMembership.class_id == class_id,
        )

    return condition
