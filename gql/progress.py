"""Live progress of long-running jobs, as GraphQL subscriptions (over graphql-transport-ws).

A subscription follows one job: it reads the job's row in the caller's school at a short interval and
sends a `Progress` each time it changes, until the job is finished. Polling the row (rather than LISTEN)
works through a transaction-mode pooler and on every worker, whichever one runs the job. Before every read
the caller is looked up again and the field's policy asked again, so a logout, a revoked token or a lost
admin flag ends the subscription with the same error the field would give.

Each job kind (an import, gql/imports.py; a school-year rollover, gql/rollover.py) adds a type implementing
`Progress`, a function that reads its snapshot in a session, and a subscription field that returns
`follow(info, policy, read)`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol, TypeVar

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import DomainError, ErrorCode
from gql.context import Info
from gql.errors import client_error
from gql.ids import parse_id
from gql.permissions import denial
from tenants import policies
from tenants.callers import Caller

POLL_EVERY = 0.25  # seconds between two reads of the job


@strawberry.interface(description="How far a long-running job has got; sent each time it changes.")
class Progress:
    processed: int = strawberry.field(description="Items done so far.")
    total: int = strawberry.field(description="Items in all.")
    finished: bool = strawberry.field(description="The job has ended (this is the last one sent).")


class Snapshot(Protocol):
    @property
    def finished(self) -> bool: ...


S = TypeVar("S", bound=Snapshot)


def followed_job_id(id: strawberry.ID) -> uuid.UUID:
    """The id of the job a subscription follows; a malformed one is NOT_FOUND, as an unknown one is."""
    try:
        return parse_id(id, field="id")
    except DomainError as error:
        raise client_error(error.problems[0].message, ErrorCode.NOT_FOUND.value) from None


async def follow(
    info: Info,
    policy: Callable[[Caller | None], object],
    read: Callable[[AsyncSession], Awaitable[S]],
    *,
    every: float = POLL_EVERY,
) -> AsyncGenerator[S, None]:
    """Each new snapshot `read` returns, until one is finished; `policy` is asked again before every read."""
    context, last = info.context, None
    while True:
        try:
            policy(await context.recheck_caller())
        except policies.Denied as error:
            raise denial(error) from None
        async with context.scope() as session:
            snapshot = await read(session)
        if snapshot != last:
            yield snapshot
            last = snapshot
        if snapshot.finished:
            return
        await asyncio.sleep(every)
