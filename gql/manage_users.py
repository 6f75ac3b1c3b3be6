"""The admin's mutations on the users table: add, edit a cell, delete, restore, reset passwords."""

from __future__ import annotations

import uuid
from typing import Any

import strawberry

from db import manage_users
from db.errors import DomainError
from db.users import get_user, sharing_a_class, users_by_id
from gql.context import Info
from gql.enums import UserType
from gql.errors import client_error
from gql.ids import parse_id, parse_ids
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import IsAdmin, IsStaff
from gql.roster import SchoolClass, User
from tenants import policies
from tenants.callers import Person
from tenants.reauth import reauthenticate

UserField = manage_users.UserField  # marked as a GraphQL enum in place, as in gql.enums
strawberry.enum(UserField, description="The cells of the users table that can be edited.")


@strawberry.input
class AddUserInput:
    username: str
    password: str
    type: UserType
    first_name: str = ""
    surname: str = ""
    is_admin: bool = False
    must_change_password: bool = False
    registration_class_id: strawberry.ID | None = None
    teaching_class_ids: list[strawberry.ID] = strawberry.field(default_factory=list)
    email: str | None = strawberry.field(default=None, description="Teachers only; unique in the school.")


@strawberry.type
class UserPayload(Payload):
    user: User | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
    left_class: SchoolClass | None = strawberry.field(
        default=None,
        description="The registration class the user left: a pupil made a teacher leaves their form.",
    )


@strawberry.type
class UsersPayload(Payload):
    users: list[User] = strawberry.field(default_factory=list)
    errors: list[UserError] = strawberry.field(default_factory=list)


async def _current_user(info: Info, user_id: uuid.UUID) -> User | None:
    async with info.context.scope() as session:
        row = await get_user(session, school_id=info.context.signed_in().school_id, user_id=user_id)
    return User.from_row(row) if row else None


@strawberry.type
class ManageUserMutations:
    @strawberry.mutation(permission_classes=[IsAdmin], description="Add a pupil or a teacher.")
    async def add_user(self, info: Info, input: AddUserInput) -> UserPayload:
        try:
            async with info.context.scope() as session:
                row = await manage_users.add_user(
                    session,
                    school_id=info.context.signed_in().school_id,
                    actor=info.context.actor(),
                    username=input.username,
                    password=input.password,
                    type=input.type,
                    first_name=input.first_name,
                    surname=input.surname,
                    is_admin=input.is_admin,
                    must_change_password=input.must_change_password,
                    registration_class_id=parse_id(input.registration_class_id, field="registrationClassId")
                    if input.registration_class_id
                    else None,
                    teaching_class_ids=parse_ids(input.teaching_class_ids, field="teachingClassIds"),
                    email=input.email,
                )
        except DomainError as error:
            return UserPayload(errors=user_errors(error, under="input"))
        return UserPayload(user=User.from_row(row))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Change one field of one user, like editing a cell. A stale expectedVersion "
        "changes nothing and returns the user as it is now.",
    )
    async def update_user_field(
        self, info: Info, user_id: strawberry.ID, field: UserField, value: str, expected_version: int
    ) -> UserPayload:
        try:
            target = parse_id(user_id, field="userId")
        except DomainError as error:
            return UserPayload(errors=user_errors(error))
        try:
            async with info.context.scope() as session:
                edited = await manage_users.edit_user_field(
                    session,
                    school_id=info.context.signed_in().school_id,
                    actor=info.context.actor(),
                    user_id=target,
                    field=field,
                    value=value,
                    expected_version=expected_version,
                )
        except DomainError as error:
            return UserPayload(
                user=await _current_user(info, target), errors=user_errors(error, user_id=target)
            )
        return UserPayload(
            user=User.from_row(edited.user),
            left_class=SchoolClass.from_row(edited.left_class) if edited.left_class else None,
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Soft-delete users: they cannot sign in and their sessions end at once.",
    )
    async def delete_users(self, info: Info, user_ids: list[strawberry.ID]) -> UsersPayload:
        return await _batch(info, manage_users.delete_users, user_ids)

    @strawberry.mutation(
        permission_classes=[IsAdmin], description="Bring deleted users back, with their classes."
    )
    async def restore_users(self, info: Info, user_ids: list[strawberry.ID]) -> UsersPayload:
        return await _batch(info, manage_users.restore_users, user_ids)

    @strawberry.mutation(
        permission_classes=[IsStaff],
        description="Set a new password for the users, after you type your own password "
        "again. Admins may reset anyone's; teachers, when the school allows it, "
        "only those of the pupils in the classes they are in.",
    )
    async def reset_passwords(
        self,
        info: Info,
        user_ids: list[strawberry.ID],
        current_password: str,
        new_password: str,
        confirm_password: str,
        must_change_password: bool = False,
    ) -> UsersPayload:
        context, caller = info.context, info.context.person()
        try:
            targets = parse_ids(user_ids, field="userIds")
            # Before the password is checked, so a teacher who may not is told so without spending an attempt.
            await _require_may_reset(info, caller, targets)
            await reauthenticate(await context.database(), caller, current_password)
            async with context.scope() as session:
                rows = await manage_users.reset_passwords(
                    session,
                    school_id=caller.school_id,
                    actor=context.actor(),
                    keep_session=caller.session_id,
                    user_ids=targets,
                    new_password=new_password,
                    confirm_password=confirm_password,
                    must_change_password=must_change_password,
                    sees_every_pupil=policies.sees_every_pupil(caller),
                )
        except DomainError as error:
            return UsersPayload(errors=user_errors(error))
        except manage_users.ResetForbidden as error:
            raise client_error(str(error), "FORBIDDEN") from None
        return UsersPayload(users=[User.from_row(row) for row in rows])


async def _require_may_reset(info: Info, caller: Person, user_ids: list[uuid.UUID]) -> None:
    """The rule viewerCanResetPassword shows (tenants.policies), for every user of the batch: FORBIDDEN for
    the whole batch otherwise."""
    if policies.sees_every_pupil(caller):
        return  # an admin may reset anyone's; unknown and deleted users are the domain's errors
    school = await info.context.loaders.school()
    async with info.context.scope() as session:
        found = await users_by_id(session, school_id=caller.school_id, user_ids=user_ids)
        mine = await sharing_a_class(
            session, school_id=caller.school_id, viewer_id=caller.user_id, user_ids=user_ids
        )
    for user_id in user_ids:
        row = found.get(user_id)
        facts = (
            None
            if row is None
            else policies.UserFacts(
                id=row.id,
                type=row.type,
                deleted=row.deleted_at is not None,
                shares_a_class_with_caller=row.id in mine,
            )
        )
        if facts is None or not policies.may_reset_password_of(caller, school, facts):
            message = (
                "You can reset the passwords only of the pupils in the classes you are in."
                if school.teachers_can_reset_pupil_passwords
                else "Only a school admin can reset passwords in this school."
            )
            raise client_error(message, "FORBIDDEN")


async def _batch(info: Info, operation: Any, user_ids: list[strawberry.ID]) -> UsersPayload:
    try:
        targets = parse_ids(user_ids, field="userIds")
        async with info.context.scope() as session:
            rows = await operation(
                session,
                school_id=info.context.signed_in().school_id,
                actor=info.context.actor(),
                user_ids=targets,
            )
    except DomainError as error:
        return UsersPayload(errors=user_errors(error))
    return UsersPayload(users=[User.from_row(row) for row in rows])
