"""Classes: the SchoolClass type with its roster, the class list, and the admin's class mutations.

A compiled path answers `classes` and the SchoolClass fields first, in one SQL statement: gql/compiled.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import strawberry

from db import classes as domain
from db import models
from db.errors import DomainError, Problems, require_batch_size
from db.users import users_by_id
from gql.context import Info
from gql.enums import ClassKind
from gql.ids import parse_id
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import CanReadRoster, IsAdmin
from gql.roster import SchoolClass, User


@strawberry.type
class ClassPayload(Payload):
    school_class: SchoolClass | None = strawberry.field(
        default=None, description="The class changed; for deleteClass, the class as it was."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)
    users: list[User] = strawberry.field(
        default_factory=list,
        description="For assignClass and removeFromClass: the users named, as they are now, in the order "
        "given.",
    )
    affected_classes: list[SchoolClass] = strawberry.field(
        default_factory=list,
        description="For assignClass and removeFromClass: the class, then every registration class the "
        "users moved out of; ask for their memberCount to show the new sizes.",
    )


@strawberry.type
class ClassQueries:
    @strawberry.field(
        permission_classes=[CanReadRoster],
        description="The school's classes, registration classes first, then by name.",
    )
    async def classes(self, info: Info, kind: ClassKind | None = None) -> list[SchoolClass]:
        async with info.context.scope() as session:
            rows = await domain.list_classes(session, school_id=info.context.signed_in().school_id, kind=kind)
        return [SchoolClass.from_row(row) for row in rows]

    @strawberry.field(permission_classes=[CanReadRoster], description="One class by id, or null.")
    async def school_class(self, info: Info, id: strawberry.ID) -> SchoolClass | None:
        try:
            class_id = parse_id(id, field="id")
        except DomainError:
            return None
        async with info.context.scope() as session:
            row = await domain.get_class(
                session, school_id=info.context.signed_in().school_id, class_id=class_id
            )
        return SchoolClass.from_row(row) if row else None


def _class_and_users(class_id: strawberry.ID, user_ids: list[strawberry.ID]) -> dict[str, Any]:
    require_batch_size(len(user_ids))
    problems = Problems()
    target = problems.check(lambda: parse_id(class_id, field="classId"))
    members = [problems.check(partial(parse_id, user_id, field="userIds")) for user_id in user_ids]
    problems.raise_any()
    return {"class_id": target, "user_ids": members}


async def _change(
    info: Info,
    operation: Callable[..., Awaitable[models.SchoolClass | domain.Assigned]],
    arguments: Callable[[], dict[str, Any]],
) -> ClassPayload:
    """Run one class change in its own transaction, run again if it collides with a concurrent one."""
    context, caller = info.context, info.context.signed_in()
    actor = context.actor()
    try:
        given = arguments()
        row = await domain.with_retries(
            context.scope,
            lambda session: operation(session, school_id=caller.school_id, actor=actor, **given),
        )
    except DomainError as error:
        return ClassPayload(errors=user_errors(error))
    # Later fields of the same request must see the change.
    context.loaders.clear()
    if isinstance(row, domain.Assigned):
        async with context.scope() as session:
            found = await users_by_id(session, school_id=caller.school_id, user_ids=row.user_ids)
            left = await domain.classes_by_id(
                session, school_id=caller.school_id, class_ids=row.left_class_ids
            )
        return ClassPayload(
            school_class=SchoolClass.from_row(row.school_class),
            users=[User.from_row(found[user_id]) for user_id in row.user_ids if user_id in found],
            affected_classes=[SchoolClass.from_row(c) for c in (row.school_class, *left)],
        )
    return ClassPayload(school_class=SchoolClass.from_row(row))


@strawberry.type
class ClassMutations:
    @strawberry.mutation(permission_classes=[IsAdmin], description="Add a registration or a teaching class.")
    async def create_class(self, info: Info, name: str, kind: ClassKind) -> ClassPayload:
        return await _change(info, domain.create_class, lambda: {"name": name, "kind": kind})

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Rename a class; names are unique per kind, whatever their case.",
    )
    async def rename_class(self, info: Info, class_id: strawberry.ID, name: str) -> ClassPayload:
        return await _change(
            info, domain.rename_class, lambda: {"class_id": parse_id(class_id, field="classId"), "name": name}
        )

    @strawberry.mutation(permission_classes=[IsAdmin], description="Delete a class; its members stay.")
    async def delete_class(self, info: Info, class_id: strawberry.ID) -> ClassPayload:
        return await _change(
            info, domain.delete_class, lambda: {"class_id": parse_id(class_id, field="classId")}
        )

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Put users in a class. A registration class MOVES each user out of "
        "their previous one; a teaching class adds. All of them, or none.",
    )
    async def assign_class(
        self, info: Info, class_id: strawberry.ID, user_ids: list[strawberry.ID]
    ) -> ClassPayload:
        return await _change(info, domain.assign_users, lambda: _class_and_users(class_id, user_ids))

    @strawberry.mutation(
        permission_classes=[IsAdmin], description="Take users out of a class. All of them, or none."
    )
    async def remove_from_class(
        self, info: Info, class_id: strawberry.ID, user_ids: list[strawberry.ID]
    ) -> ClassPayload:
        return await _change(info, domain.remove_users, lambda: _class_and_users(class_id, user_ids))
