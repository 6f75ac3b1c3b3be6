"""The users table: `users` (filtered, sorted, paged) and `user(id)`."""

from __future__ import annotations

import strawberry

from db import users as domain
from db.errors import DomainError
from gql.context import Info
from gql.ids import parse_id
from gql.permissions import CanReadRoster
from gql.roster import After, Before, First, Last, User, UserConnection, UserFilter, UserOrder, users_page


@strawberry.type
class UserQueries:
    @strawberry.field(
        permission_classes=[CanReadRoster],
        description="The users table: filter, search, sort and page (either way: `first`/`after` or "
        "`last`/`before`).",
    )
    async def users(
        self,
        info: Info,
        filter: UserFilter | None = None,
        order_by: UserOrder | None = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> UserConnection:
        return await users_page(info, filter, order_by, first, after, last, before)

    @strawberry.field(permission_classes=[CanReadRoster], description="One user by id, deleted or not.")
    async def user(self, info: Info, id: strawberry.ID) -> User | None:
        try:
            user_id = parse_id(id, field="id")
        except DomainError:
            return None
        async with info.context.scope() as session:
            row = await domain.get_user(
                session, school_id=info.context.signed_in().school_id, user_id=user_id
            )
        return User.from_row(row) if row else None
