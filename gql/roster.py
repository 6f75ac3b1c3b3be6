"""The roster's types: User, SchoolClass and the users connection, and the paged read that both the users
table (`users`) and a class's roster (`members`) are.

A compiled path answers `users`, `classes` and these types' fields first, in one SQL statement: gql/compiled.py.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Annotated

import strawberry

from db import models
from db import users as domain
from db.errors import DomainError
from db.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from gql.connections import Connection, Edge, PageInfo, bad_page_request
from gql.context import Info
from gql.enums import ClassKind, UserType
from gql.errors import client_error
from gql.ids import Node, lookup_id
from gql.permissions import CanReadRoster
from tenants import policies
from tenants.callers import Person

# Marked as GraphQL enums in place, as in gql.enums.
UserStatus = domain.UserStatus
strawberry.enum(UserStatus, description="ACTIVE by default; DELETED shows deleted users.")
UserOrderField = domain.UserOrderField
strawberry.enum(UserOrderField)


# The paging arguments of `users` and `members`, described once.
First = Annotated[
    int | None,
    strawberry.argument(
        description=f"How many to return from the start (a page): {DEFAULT_PAGE_SIZE} when neither `first` nor "
        f"`last` is given, at most {MAX_PAGE_SIZE}; 0 returns no users, for `totalCount` or `pageInfo` alone."
    ),
]
After = Annotated[
    str | None,
    strawberry.argument(
        description="The `endCursor` of the page before, to read the next page. A cursor is good only for "
        "the ordering and filter it was given out with; with another it is refused (BAD_REQUEST)."
    ),
]
Last = Annotated[
    int | None,
    strawberry.argument(
        description=f"How many to return from the end instead (a page read backwards, at most {MAX_PAGE_SIZE}); "
        "not with `first`."
    ),
]
Before = Annotated[
    str | None,
    strawberry.argument(
        description="The `startCursor` of the page after, to read the page before it (with `last`). Good only "
        "for the ordering and filter it was given out with, as `after`."
    ),
]


@strawberry.type(description="A registration class (a user has at most one) or a teaching class.")
class SchoolClass(Node):
    id: strawberry.ID
    name: str
    kind: ClassKind
    class_id: strawberry.Private[uuid.UUID]

    @strawberry.field(permission_classes=[CanReadRoster], description="How many users (not deleted) it has.")
    async def member_count(self, info: Info) -> int:
        return await info.context.loaders.class_member_counts.load(self.class_id)

    @strawberry.field(
        permission_classes=[CanReadRoster], description="The class roster, by surname, paged like `users`."
    )
    async def members(
        self,
        info: Info,
        type: UserType | None = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> UserConnection:
        return await users_page(
            info, UserFilter(type=type), None, first, after, last, before, class_id=self.class_id
        )

    @strawberry.field(
        description="Whether you may rename or delete this class and move users into or out of it "
        "(renameClass, deleteClass, assignClass, removeFromClass)."
    )
    async def viewer_can_edit(self, info: Info) -> bool:
        caller = info.context.caller
        return caller is not None and policies.may_edit_class(caller, await info.context.loaders.school())

    @classmethod
    def from_row(cls, row: models.SchoolClass) -> SchoolClass:
        return cls(id=strawberry.ID(str(row.id)), name=row.name, kind=row.kind, class_id=row.id)


@strawberry.type(description="A pupil or a teacher of the school.")
class User(Node):
    id: strawberry.ID
    username: str
    first_name: str
    surname: str
    type: UserType
    is_admin: bool
    must_change_password: bool
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int = strawberry.field(description="Pass it back as `expectedVersion` when editing this user.")
    external_id: str | None = strawberry.field(
        description="The id the school's provider (over SCIM) knows this user by; null for users added here."
    )
    email: str | None = strawberry.field(
        permission_classes=[CanReadRoster],
        description="A teacher's email address; pupils have none. Staff and ROSTER_READ tokens may read it.",
    )
    last_sign_in_at: datetime | None = strawberry.field(
        permission_classes=[CanReadRoster],
        description="When the user last signed in (with a password or a login card); null if never.",
    )
    user_id: strawberry.Private[uuid.UUID]
    deleted_by_id: strawberry.Private[uuid.UUID | None] = None

    @strawberry.field(
        permission_classes=[CanReadRoster],
        description="Who deleted the user, beside deletedAt; null when not deleted, or when no user "
        "did (the school's provider).",
    )
    async def deleted_by(self, info: Info) -> User | None:
        if self.deleted_at is None or self.deleted_by_id is None:
            return None
        row = await info.context.loaders.users.load(self.deleted_by_id)
        return User.from_row(row) if row else None

    async def _facts(self, info: Info) -> policies.UserFacts:
        caller = info.context.caller
        # Only a teacher's rules ask about shared classes; an admin's never do.
        teacher = (
            isinstance(caller, Person) and policies.is_staff(caller) and not policies.sees_every_pupil(caller)
        )
        return policies.UserFacts(
            id=self.user_id,
            type=self.type,
            deleted=self.deleted_at is not None,
            shares_a_class_with_caller=teacher
            and await info.context.loaders.shares_a_class.load(self.user_id),
        )

    @strawberry.field(description="Whether you may edit this user's cells (updateUserField).")
    async def viewer_can_edit(self, info: Info) -> bool:
        caller = info.context.caller
        return caller is not None and policies.may_edit_user(
            caller, await info.context.loaders.school(), await self._facts(info)
        )

    @strawberry.field(
        description="Whether you may delete this user (deleteUsers; for a user deleted already, "
        "deleting again changes nothing: offer restoreUsers by deletedAt)."
    )
    async def viewer_can_delete(self, info: Info) -> bool:
        caller = info.context.caller
        return caller is not None and policies.may_delete_user(
            caller, await info.context.loaders.school(), await self._facts(info)
        )

    @strawberry.field(description="Whether you may set a new password for this user (resetPasswords).")
    async def viewer_can_reset_password(self, info: Info) -> bool:
        caller = info.context.caller
        return caller is not None and policies.may_reset_password(
            caller, await info.context.loaders.school(), await self._facts(info)
        )

    @strawberry.field(description="Whether you may print this user's login card (loginCards, /login-cards).")
    async def viewer_can_print_login_card(self, info: Info) -> bool:
        caller = info.context.caller
        return caller is not None and policies.may_print_login_card(caller, await self._facts(info))

    @strawberry.field(description="The user's one registration class, if any.")
    async def registration_class(self, info: Info) -> SchoolClass | None:
        classes = await info.context.loaders.user_classes.load(self.user_id)
        return next(
            (SchoolClass.from_row(c) for c in classes if c.kind == models.ClassKind.REGISTRATION), None
        )

    @strawberry.field(description="The teaching classes the user is in, by name.")
    async def teaching_classes(self, info: Info) -> list[SchoolClass]:
        classes = await info.context.loaders.user_classes.load(self.user_id)
        return [SchoolClass.from_row(c) for c in classes if c.kind == models.ClassKind.TEACHING]

    @classmethod
    def from_row(cls, row: models.User) -> User:
        return cls(
            id=strawberry.ID(str(row.id)),
            username=row.username,
            first_name=row.first_name,
            surname=row.surname,
            type=row.type,
            is_admin=row.is_admin,
            must_change_password=row.must_change_password,
            deleted_at=row.deleted_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
            external_id=row.external_id,
            email=row.email,
            last_sign_in_at=row.last_sign_in_at,
            user_id=row.id,
            deleted_by_id=row.deleted_by,
        )


@strawberry.input(description="Narrow the users table; every part is optional.")
class UserFilter:
    search: str | None = strawberry.field(
        default=None,
        description="Part of a username, first name, surname or full name either way round ('Amy Brown' and "
        "'Brown Amy' both find Amy Brown); any case.",
    )
    type: UserType | None = None
    class_id: strawberry.ID | None = None
    status: UserStatus = domain.UserStatus.ACTIVE
    updated_since: datetime | None = strawberry.field(
        default=None,
        description="Users whose own fields changed at or after this time (deletions too, with status ALL). "
        "Class moves and purges are only in the change feed (`changes`), which never misses a change.",
    )
    not_in_class_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only users who are not members of this class (those who could be added)."
    )
    has_registration_class: bool | None = strawberry.field(
        default=None,
        description="true: only users in a registration class; false: only those in none. Both when not given.",
    )

    def to_domain(self) -> domain.UserFilter:
        return domain.UserFilter(
            search=self.search,
            type=self.type,
            status=self.status,
            updated_since=self.updated_since,
            class_id=lookup_id(self.class_id) if self.class_id is not None else None,
            not_in_class_id=lookup_id(self.not_in_class_id) if self.not_in_class_id is not None else None,
            has_registration_class=self.has_registration_class,
        )


@strawberry.input
class UserOrder:
    field: UserOrderField = domain.UserOrderField.SURNAME
    descending: bool = False


@strawberry.type
class UserConnection(Connection[User]):
    where: strawberry.Private[domain.UserFilter]

    @strawberry.field(description="How many users match the filter, on every page.")
    async def total_count(self, info: Info) -> int:
        async with info.context.scope() as session:
            return await domain.count_users(
                session, school_id=info.context.signed_in().school_id, where=self.where
            )


async def users_page(
    info: Info,
    filter: UserFilter | None,
    order_by: UserOrder | None,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
    *,
    class_id: uuid.UUID | None = None,
) -> UserConnection:
    """A page of users; `class_id` narrows it to one class's members (a class roster)."""
    order = order_by or UserOrder()
    if (filter or UserFilter()).status != domain.UserStatus.ACTIVE and not policies.may_list_deleted_users(
        info.context.caller
    ):
        raise client_error("Only a school admin can list deleted users.", "FORBIDDEN")
    try:
        where = (filter or UserFilter()).to_domain()
        if class_id is not None:
            where = dataclasses.replace(where, class_id=class_id)
        async with info.context.scope() as session:
            page = await domain.list_users(
                session,
                school_id=info.context.signed_in().school_id,
                where=where,
                first=first,
                after=after,
                last=last,
                before=before,
                order=domain.UserOrder(field=order.field, descending=order.descending),
            )
    except DomainError as error:
        raise bad_page_request(error) from None
    return UserConnection(
        edges=[
            Edge(cursor=cursor, node=User.from_row(user))
            for user, cursor in zip(page.users, page.cursors, strict=True)
        ],
        page_info=PageInfo(
            has_next_page=page.has_next_page,
            end_cursor=page.cursors[-1] if page.cursors else None,
            has_previous_page=page.has_previous_page,
            start_cursor=page.cursors[0] if page.cursors else None,
        ),
        where=where,
    )
