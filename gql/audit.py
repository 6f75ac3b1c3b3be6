"""The audit log: who did what to whom, and when, newest first; admins read it."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from db import audit, models
from db.audit import action_of, summary_of
from db.errors import DomainError
from gql.connections import Connection, Edge, PageInfo, bad_page_request
from gql.context import Info
from gql.ids import Node, lookup_id
from gql.permissions import IsAdmin

AuditAction = audit.AuditAction  # marked as a GraphQL enum in place, as in gql.enums
strawberry.enum(AuditAction, description="What an audit event records: the thing, then what happened to it.")


@strawberry.type(description="One change: who did what to whom, and when.")
class AuditEvent(Node):
    id: strawberry.ID
    action: AuditAction = strawberry.field(
        description="What was done. Events written under an older name are shown under the current one."
    )
    actor_id: strawberry.ID | None
    actor_label: str
    target_user_ids: list[strawberry.ID]
    summary: JSON = strawberry.field(
        description="The details of the change (never a password or a login code): a JSON object "
        "whose keys are in camelCase, whenever the event was written."
    )
    request_id: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.AuditEvent) -> AuditEvent:
        return cls(
            id=strawberry.ID(str(row.id)),
            action=action_of(row.action),
            actor_id=strawberry.ID(str(row.actor_id)) if row.actor_id else None,
            actor_label=row.actor_label,
            target_user_ids=[strawberry.ID(str(t)) for t in row.target_user_ids],
            summary=JSON(summary_of(row.summary)),
            request_id=row.request_id,
            created_at=row.created_at,
        )


@strawberry.input
class AuditEventFilter:
    action: AuditAction | None = strawberry.field(
        default=None, description="Only events of this action, whatever name they were written under."
    )
    user_id: strawberry.ID | None = strawberry.field(default=None, description="As the actor or a target.")


@strawberry.type
class AuditEventQueries:
    @strawberry.field(permission_classes=[IsAdmin], description="The audit log, newest first.")
    async def audit_events(
        self,
        info: Info,
        filter: AuditEventFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditEvent]:
        where = filter or AuditEventFilter()
        try:
            user_id = lookup_id(where.user_id) if where.user_id else None
            async with info.context.scope() as session:
                page = await audit.list_events(
                    session,
                    school_id=info.context.signed_in().school_id,
                    action=where.action,
                    user_id=user_id,
                    first=first,
                    after=after,
                )
        except DomainError as error:
            raise bad_page_request(error) from None
        return Connection(
            edges=[
                Edge(cursor=c, node=AuditEvent.from_row(e))
                for e, c in zip(page.events, page.cursors, strict=True)
            ],
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                end_cursor=page.cursors[-1] if page.cursors else None,
                has_previous_page=after is not None,
                start_cursor=page.cursors[0] if page.cursors else None,
            ),
        )
