"""The change feed: `changes(after, first)` and `changesCursor`, for admins and ROSTER_READ tokens."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import strawberry
from sqlalchemy import select

from db import changes as domain
from db import models
from db.errors import DomainError, ErrorCode
from gql.connections import Connection, Edge, PageInfo, bad_page_request
from gql.context import Info
from gql.enums import ClassKind
from gql.errors import client_error
from gql.permissions import CanFollowChanges
from gql.roster import SchoolClass, User

# Marked as GraphQL enums in place, as in gql.enums.
ChangeKind = domain.ChangeKind
strawberry.enum(ChangeKind, description="What changed: a user, a class, or a user's membership of a class.")
ChangeOperation = domain.Operation
strawberry.enum(
    ChangeOperation,
    name="ChangeOperation",
    description="UPSERT: it exists, read its current state. DELETE: it is gone (a user: deleted or purged).",
)


@dataclass
class _Current:
    """The page's users and classes as they are now, read once for the whole page when first asked for."""

    info: Info
    user_ids: list[uuid.UUID]
    class_ids: list[uuid.UUID]
    _users: asyncio.Task[dict[uuid.UUID, models.User]] | None = field(default=None)
    _classes: asyncio.Task[dict[uuid.UUID, models.SchoolClass]] | None = field(default=None)

    async def user(self, user_id: uuid.UUID) -> models.User | None:
        if self._users is None:
            self._users = asyncio.ensure_future(self._read_users())
        return (await self._users).get(user_id)

    async def school_class(self, class_id: uuid.UUID) -> models.SchoolClass | None:
        if self._classes is None:
            self._classes = asyncio.ensure_future(self._read_classes())
        return (await self._classes).get(class_id)

    async def _read_users(self) -> dict[uuid.UUID, models.User]:
        school_id = self.info.context.signed_in().school_id
        async with self.info.context.scope() as session:
            rows = await session.execute(
                select(models.User).where(
                    models.User.school_id == school_id, models.User.id.in_(self.user_ids)
                )
            )
            return {row.id: row for row in rows.scalars()}

    async def _read_classes(self) -> dict[uuid.UUID, models.SchoolClass]:
        school_id = self.info.context.signed_in().school_id
        async with self.info.context.scope() as session:
            rows = await session.execute(
                select(models.SchoolClass).where(
                    models.SchoolClass.school_id == school_id, models.SchoolClass.id.in_(self.class_ids)
                )
            )
            return {row.id: row for row in rows.scalars()}


@strawberry.type(description="One entity's latest change in a page of the change feed.")
class Change:
    cursor: str = strawberry.field(
        description="Read on from here with changes(after:) to resume after this change."
    )
    kind: ChangeKind
    id: strawberry.ID = strawberry.field(
        description="The user's or the class's id; a membership's is its user's and class's ids, `user:class`."
    )
    user_id: strawberry.ID | None = strawberry.field(description="A USER's or a MEMBERSHIP's user.")
    class_id: strawberry.ID | None = strawberry.field(description="A CLASS, or a MEMBERSHIP's class.")
    membership_kind: ClassKind | None = strawberry.field(description="A MEMBERSHIP's kind (its class's).")
    operation: ChangeOperation
    at: datetime = strawberry.field(description="When the change was made (its transaction's time).")
    actor: str = strawberry.field(
        description="Who made it: `user:<id>`, `api-token:<id>`, `provisioning-token:<id>` or a command."
    )
    record: strawberry.Private[domain.ChangeRecord]
    current: strawberry.Private[_Current]

    @strawberry.field(description="The user as they are now (deleted ones too); null once purged.")
    async def user(self) -> User | None:
        user_id = self.record.user_id
        row = await self.current.user(user_id) if user_id is not None else None
        return User.from_row(row) if row is not None else None

    @strawberry.field(description="The class as it is now; null once deleted.")
    async def school_class(self) -> SchoolClass | None:
        class_id = self.record.school_class_id
        row = await self.current.school_class(class_id) if class_id is not None else None
        return SchoolClass.from_row(row) if row is not None else None

    @classmethod
    def from_record(cls, record: domain.ChangeRecord, current: _Current) -> Change:
        user_id, class_id = record.user_id, record.school_class_id
        return cls(
            cursor=record.cursor,
            kind=record.kind,
            id=strawberry.ID(
                f"{record.entity_id}:{record.class_id}"
                if record.kind == ChangeKind.MEMBERSHIP
                else str(record.entity_id)
            ),
            user_id=strawberry.ID(str(user_id)) if user_id is not None else None,
            class_id=strawberry.ID(str(class_id)) if class_id is not None else None,
            membership_kind=models.ClassKind(record.membership_kind) if record.membership_kind else None,
            operation=record.operation,
            at=record.at,
            actor=record.actor,
            record=record,
            current=current,
        )


@strawberry.type(description="A page of the change feed, oldest first.")
class ChangeConnection(Connection[Change]):
    pass


def _feed_error(error: DomainError) -> Exception:
    problem = error.problems[0]
    if problem.code == ErrorCode.RESYNC_REQUIRED:
        return client_error(problem.message, ErrorCode.RESYNC_REQUIRED.value)
    return bad_page_request(error)


@strawberry.type
class ChangeQueries:
    @strawberry.field(
        permission_classes=[CanFollowChanges],
        description="What changed in the roster after `after` (a cursor from here or from changesCursor), "
        "oldest first; an entity changed several times in one page appears once, as its latest change. "
        "pageInfo.endCursor is where to read on from, also when the page is empty. A cursor older than the "
        "school's feedRetentionDays is refused with RESYNC_REQUIRED: read the whole roster again.",
    )
    async def changes(
        self, info: Info, after: str | None = None, first: int | None = domain.DEFAULT_FIRST
    ) -> ChangeConnection:
        try:
            async with info.context.scope() as session:
                page = await domain.read_changes(
                    session, school_id=info.context.signed_in().school_id, after=after, first=first
                )
        except DomainError as error:
            raise _feed_error(error) from None
        current = _Current(
            info,
            user_ids=list({r.user_id for r in page.changes if r.user_id is not None}),
            class_ids=list({r.school_class_id for r in page.changes if r.school_class_id is not None}),
        )
        return ChangeConnection(
            edges=[Edge(cursor=r.cursor, node=Change.from_record(r, current)) for r in page.changes],
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                end_cursor=page.end_cursor,
                has_previous_page=after is not None,
                start_cursor=page.changes[0].cursor if page.changes else None,
            ),
        )

    @strawberry.field(
        permission_classes=[CanFollowChanges],
        description="A cursor at now: take it, read the whole roster, then follow changes(after:) from it; "
        "nothing is lost.",
    )
    async def changes_cursor(self, info: Info) -> str:
        async with info.context.scope() as session:
            return await domain.current_cursor(session)
