"""The change feed: what changed in a school's roster (users, classes, memberships), in an order a follower
can never fall behind in.

Triggers (migration 0016) record every change to `users`, `classes` and `class_memberships` in the change's
own transaction, whatever made it. This module reads those records for any surface (GraphQL's `changes`, and
later others), gives out cursors, and purges records older than the school's feed retention.

The order is (xid, position): the writing transaction's id, then the record's place in it. A reader sees only
the records of transactions older than the oldest one still running (the horizon, `pg_snapshot_xmin`): every
record before the horizon is committed and final, and every record still to come is after it. So the visible
records are a prefix of the order that only grows, and a follower that has read up to a cursor never finds a
record appear behind it, however many writers commit in whatever order. (A plain sequence would not do: a
transaction that took position 10 can commit after one that took 11.) A long transaction holds the horizon
back, so the feed waits for it rather than skipping it.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import DomainError, ErrorCode, Problem
from db.models import Change, School
from db.pagination import decode_cursor, encode_cursor
from db.text import offset_time, plain_bigint

DEFAULT_FIRST = 100
MAX_FIRST = 1000
RETENTION_DAYS = range(1, 3651)

_HORIZON = text("select pg_snapshot_xmin(pg_current_snapshot())::text::bigint, now()")


class ChangeKind(enum.StrEnum):
    USER = "USER"
    CLASS = "CLASS"
    MEMBERSHIP = "MEMBERSHIP"


class Operation(enum.StrEnum):
    """UPSERT: the entity exists (read its current state). DELETE: it is gone, or a user is deleted."""

    UPSERT = "UPSERT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One entity's change. A membership is its user (`entity_id`), its class and its kind."""

    cursor: str
    kind: ChangeKind
    entity_id: uuid.UUID
    class_id: uuid.UUID | None
    membership_kind: str | None
    operation: Operation
    at: datetime
    actor: str

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.entity_id if self.kind != ChangeKind.CLASS else None

    @property
    def school_class_id(self) -> uuid.UUID | None:
        return self.entity_id if self.kind == ChangeKind.CLASS else self.class_id


@dataclass(frozen=True, slots=True)
class ChangePage:
    changes: list[ChangeRecord]
    # Where to read on from: after the last record read, or (when there is no more yet) the horizon itself.
    end_cursor: str
    has_next_page: bool


@dataclass(frozen=True, slots=True, order=True)
class _Point:
    """A place in the feed's order."""

    xid: int
    position: int


def _encode(point: _Point, issued: datetime) -> str:
    return encode_cursor([str(point.xid), str(point.position), issued.isoformat()])


def _bad_cursor() -> DomainError:
    return DomainError(
        Problem(ErrorCode.INVALID_INPUT, "That cursor is not one the change feed gave out.", "after")
    )


def _decode(cursor: str) -> tuple[_Point, datetime]:
    try:
        xid, position, issued = decode_cursor(cursor, parse=(plain_bigint, plain_bigint, offset_time))
    except DomainError:
        raise _bad_cursor() from None
    return _Point(xid, position), issued


def resync_required(message: str) -> DomainError:
    return DomainError(Problem(ErrorCode.RESYNC_REQUIRED, message, "after"))


async def _horizon(session: AsyncSession) -> tuple[_Point, datetime]:
    """The first place no record before which can still appear (its transaction is the oldest running), and
    the database's time."""
    xmin, now = (await session.execute(_HORIZON)).one()
    return _Point(int(xmin), 0), now


async def current_cursor(session: AsyncSession) -> str:
    """A cursor at "now": read the whole roster after taking it, then follow the feed from it, and nothing is
    lost (a change the read missed is after it; one already read may come again, and reads the same)."""
    horizon, now = await _horizon(session)
    return _encode(horizon, now)


async def _check_cursor(session: AsyncSession, school_id: uuid.UUID, point: _Point, issued: datetime) -> None:
    """RESYNC_REQUIRED unless every record after `point` is still kept and the cursor is within retention."""
    school = (
        await session.execute(
            select(
                School.feed_retention_days, School.feed_purged_xid, School.feed_purged_position, func.now()
            ).where(School.id == school_id)
        )
    ).one()
    days, purged_xid, purged_position, now = school
    if issued < now - timedelta(days=days):
        raise resync_required(
            f"This cursor is more than {days} days old, longer than the school keeps its change feed: read the "
            "whole roster again, starting from a new changesCursor."
        )
    if purged_xid is not None and point < _Point(purged_xid, purged_position or 0):
        raise resync_required(
            "Changes after this cursor are no longer kept: read the whole roster again, starting from a new "
            "changesCursor."
        )


def _key(record: Change) -> tuple[str, uuid.UUID, uuid.UUID | None]:
    return record.kind, record.entity_id, record.class_id


async def read_changes(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    after: str | None = None,
    first: int | None = None,
    collapse: bool = True,
) -> ChangePage:
    """The school's changes after `after` (from the oldest kept when None), oldest first, at most `first`
    records read. With `collapse`, an entity changed several times in the page appears once, as its latest
    change, in that change's place (so resuming from any change's cursor loses nothing).

    A cursor older than the school's feed retention, or from before records the purge has removed, is refused
    with RESYNC_REQUIRED: the answer is never a partial feed."""
    size = DEFAULT_FIRST if first is None else first
    if not 1 <= size <= MAX_FIRST:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, f"first must be between 1 and {MAX_FIRST}.", "first")
        )
    start = _Point(0, 0)
    if after is not None:
        start, issued = _decode(after)
        await _check_cursor(session, school_id, start, issued)
    horizon, now = await _horizon(session)
    rows = list(
        (
            await session.execute(
                select(Change)
                .where(
                    Change.school_id == school_id,
                    Change.xid < horizon.xid,
                    tuple_(Change.xid, Change.position) > tuple_(literal(start.xid), literal(start.position)),
                )
                .order_by(Change.xid, Change.position)
                .limit(size + 1)
            )
        ).scalars()
    )
    has_next = len(rows) > size
    rows = rows[:size]
    if collapse:
        latest = {_key(row): index for index, row in enumerate(rows)}
        rows = [row for index, row in enumerate(rows) if latest[_key(row)] == index]
    records = [_record(row, now) for row in rows]
    if has_next:
        end = _encode(_Point(rows[-1].xid, rows[-1].position), now)
    else:
        # Everything visible was read: the horizon is as far as a follower can be (never behind `after`).
        end = _encode(max(horizon, start), now)
    return ChangePage(changes=records, end_cursor=end, has_next_page=has_next)


def _record(row: Change, now: datetime) -> ChangeRecord:
    return ChangeRecord(
        cursor=_encode(_Point(row.xid, row.position), now),
        kind=ChangeKind(row.kind),
        entity_id=row.entity_id,
        class_id=row.class_id,
        membership_kind=row.membership_kind,
        operation=Operation(row.operation),
        at=row.at,
        actor=row.actor,
    )


async def purge_changes(session: AsyncSession, school_id: uuid.UUID, older_than: timedelta) -> int:
    """Remove the records older than `older_than` (and any before them in the feed's order), remembering the
    last one removed so that a cursor from before it is refused. Only records before the horizon are
    considered, so nothing can later appear behind what was removed."""
    horizon, _ = await _horizon(session)
    last = (
        await session.execute(
            select(Change.xid, Change.position)
            .where(
                Change.school_id == school_id,
                Change.xid < horizon.xid,
                Change.at < func.now() - older_than,
            )
            .order_by(Change.xid.desc(), Change.position.desc())
            .limit(1)
        )
    ).first()
    if last is None:
        return 0
    removed = await session.execute(
        delete(Change).where(
            Change.school_id == school_id,
            tuple_(Change.xid, Change.position) <= tuple_(literal(last.xid), literal(last.position)),
        )
    )
    await session.execute(
        update(School)
        .where(School.id == school_id)
        .values(feed_purged_xid=last.xid, feed_purged_position=last.position)
    )
    return int(removed.rowcount)  # type: ignore[attr-defined]
