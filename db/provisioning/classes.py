"""The classes a school's provider provisions (its groups): it creates them, names them, sets their kind and
members, and deletes them.

The one registration class rule holds: a user added to a registration class leaves their previous one, and a
class that becomes a registration class takes its members out of theirs.

A provider manages only the classes it created (provider_may_manage_class, recorded in `provisioned_at`), and
within them only the users it provisioned (provider_may_manage): every other class does not exist for it,
and every other member stays where they are.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.classes import (
    DELETING,
    assign_to_class,
    change_class_kind,
    create_class,
    delete_class,
    remove_from_class,
    rename_class,
)
from db.errors import DomainError, ErrorCode, Problem, on_collision
from db.models import ClassKind, ClassMembership, SchoolClass, User
from db.provisioning.provenance import kept_from_provider, provider_may_manage, provider_may_manage_class
from db.text import shown

EXTERNAL_ID_INDEX = "uq_classes_school_id_external_id"


@dataclass(frozen=True, slots=True)
class WantedClass:
    """What the provider wants a class to be, its name already clean: `members` are the users it may manage
    that belong in it (the others stay as they are)."""

    name: str
    kind: ClassKind
    external_id: str | None
    members: list[uuid.UUID]


def provisioned_classes(school_id: uuid.UUID) -> Select[SchoolClass]:
    """The school's classes the provider may manage (a list's filters, order and page come on top)."""
    return select(SchoolClass).where(SchoolClass.school_id == school_id, provider_may_manage_class())


async def members_shown(
    session: AsyncSession, school_id: uuid.UUID, class_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each class's members that the provider may manage (deactivated ones included), in one statement; other
    members are not shown, so a change of the members that leaves them out does not remove them."""
    rows = await session.execute(
        select(ClassMembership.class_id, ClassMembership.user_id)
        .join(User, (User.school_id == ClassMembership.school_id) & (User.id == ClassMembership.user_id))
        .where(
            ClassMembership.school_id == school_id,
            ClassMembership.class_id.in_(class_ids),
            provider_may_manage(),
        )
        .order_by(ClassMembership.class_id, ClassMembership.user_id)
    )
    found: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for class_id, user_id in rows:
        found[class_id].append(user_id)
    return found


def class_version(school_class: SchoolClass, members: Sequence[uuid.UUID]) -> str:
    """Classes keep no version number, so their version is a digest of everything the provider is shown."""
    seen = [school_class.name, school_class.kind.value, school_class.external_id, sorted(map(str, members))]
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:16]


def _no_such_class(group_id: str) -> DomainError:
    return DomainError(Problem(ErrorCode.NOT_FOUND, f"No group has the id {group_id}."))


async def provisioned_class(
    session: AsyncSession, school_id: uuid.UUID, group_id: str, *, lock: bool = False
) -> SchoolClass:
    """The class `group_id` names, if the provider may manage it, else NOT_FOUND: the same for every other
    class and for anything that is not an id (see provider_may_manage_class)."""
    try:
        class_id = uuid.UUID(group_id)
    except ValueError:
        raise _no_such_class(group_id) from None
    query = select(SchoolClass).where(
        SchoolClass.school_id == school_id, SchoolClass.id == class_id, provider_may_manage_class()
    )
    school_class = (
        await session.execute(query.with_for_update(**DELETING) if lock else query)
    ).scalar_one_or_none()
    if school_class is None:
        raise _no_such_class(group_id)
    return school_class


async def locked_class(
    session: AsyncSession, school_id: uuid.UUID, group_id: str
) -> tuple[SchoolClass, list[uuid.UUID]]:
    """The class, locked for a change, and the members the provider is shown. FOR UPDATE: membership changes
    take a shared lock on the class, so its version (class_version) holds until the change is made."""
    school_class = await provisioned_class(session, school_id, group_id, lock=True)
    members = (await members_shown(session, school_id, [school_class.id])).get(school_class.id, [])
    return school_class, members


async def reloaded(session: AsyncSession, school_class: SchoolClass) -> list[uuid.UUID]:
    """Read the class again after a change, and the members of it the provider is shown."""
    await session.refresh(school_class)
    return (await members_shown(session, school_class.school_id, [school_class.id])).get(school_class.id, [])


def _external_id_taken(external_id: str | None) -> DomainError:
    return DomainError(
        Problem(
            ErrorCode.EXTERNAL_ID_TAKEN,
            f"The externalId '{shown(external_id)}' belongs to another group.",
            "externalId",
        )
    )


async def _require_valid(
    session: AsyncSession, school_id: uuid.UUID, wanted: WantedClass, except_class: uuid.UUID | None = None
) -> None:
    if wanted.external_id is not None:
        others = select(SchoolClass.id).where(
            SchoolClass.school_id == school_id, SchoolClass.external_id == wanted.external_id
        )
        if except_class is not None:
            others = others.where(SchoolClass.id != except_class)
        if (await session.execute(others)).first():
            raise _external_id_taken(wanted.external_id)
    known = set(
        (
            await session.execute(
                select(User.id).where(
                    User.school_id == school_id,
                    User.id.in_(wanted.members),
                    provider_may_manage(),
                )
            )
        ).scalars()
    )
    if unknown := [str(user_id) for user_id in wanted.members if user_id not in known]:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, f"No user has the id {', '.join(unknown)}.", "members")
        )


async def create_provisioned_class(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, wanted: WantedClass
) -> SchoolClass:
    await _require_valid(session, school_id, wanted)
    school_class = await create_class(
        session,
        school_id=school_id,
        actor=actor,
        name=wanted.name,
        kind=wanted.kind,
        allow_provider_managed=True,
    )
    school_class.provisioned_at = func.now()
    await session.flush()
    await _apply(session, actor, school_class, [], wanted)
    return school_class


async def update_provisioned_class(
    session: AsyncSession,
    *,
    actor: Actor,
    school_class: SchoolClass,
    members: Sequence[uuid.UUID],
    wanted: WantedClass,
) -> None:
    """Make the class (locked_class, with the `members` it gave) what the provider wants."""
    await _require_valid(session, school_class.school_id, wanted, except_class=school_class.id)
    await _apply(session, actor, school_class, members, wanted)


async def delete_provisioned_class(session: AsyncSession, *, actor: Actor, school_class: SchoolClass) -> None:
    """Delete the class (locked_class); refused while a member the provider does not manage uses it (see
    kept_from_provider)."""
    school_id = school_class.school_id
    kept = (
        select(literal(1))
        .select_from(ClassMembership)
        .join(User, and_(User.school_id == ClassMembership.school_id, User.id == ClassMembership.user_id))
        .where(
            ClassMembership.school_id == school_id,
            ClassMembership.class_id == school_class.id,
            kept_from_provider(),
        )
    )
    if (await session.execute(kept.limit(1))).first():
        raise _managed_in_rollcall("it cannot be deleted")
    await delete_class(
        session, school_id=school_id, actor=actor, class_id=school_class.id, allow_provider_managed=True
    )


def _managed_in_rollcall(so: str) -> DomainError:
    return DomainError(
        Problem(
            ErrorCode.MANAGED_IN_ROLLCALL,
            f"This group has members that are managed in Rollcall itself, so {so}.",
        )
    )


async def _apply(
    session: AsyncSession,
    actor: Actor,
    school_class: SchoolClass,
    members: Sequence[uuid.UUID],
    wanted: WantedClass,
) -> None:
    """Make the class what the provider wants: its kind first, so that members added next obey it."""
    school_id, class_id = school_class.school_id, school_class.id
    if wanted.kind != school_class.kind:
        await _change_kind(session, actor, school_class, wanted.kind)
    if wanted.name != school_class.name:
        await rename_class(
            session,
            school_id=school_id,
            actor=actor,
            class_id=class_id,
            name=wanted.name,
            allow_provider_managed=True,
        )
    if wanted.external_id != school_class.external_id:
        before, school_class.external_id = school_class.external_id, wanted.external_id
        with on_collision({EXTERNAL_ID_INDEX: lambda: _external_id_taken(wanted.external_id)}):
            await session.flush()
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.CLASS_UPDATED,
            summary={
                "class_id": str(class_id),
                "field": "EXTERNAL_ID",
                "from": before,
                "to": wanted.external_id,
            },
        )
    current = set(members)
    if leaving := sorted(current - set(wanted.members)):
        await remove_from_class(
            session,
            school_id=school_id,
            actor=actor,
            class_id=class_id,
            user_ids=leaving,
            allow_provider_managed=True,
            including_deleted=True,
        )
    if joining := [user_id for user_id in wanted.members if user_id not in current]:
        await assign_to_class(
            session,
            school_id=school_id,
            actor=actor,
            class_id=class_id,
            user_ids=joining,
            allow_provider_managed=True,
            including_deleted=True,
        )


async def _change_kind(
    session: AsyncSession, actor: Actor, school_class: SchoolClass, kind: ClassKind
) -> None:
    """The kind changes only while every member is one the provider manages: the memberships follow the
    kind, so it would move users the provider may not change."""
    others = (
        select(ClassMembership.user_id)
        .join(User, and_(User.school_id == ClassMembership.school_id, User.id == ClassMembership.user_id))
        .where(
            ClassMembership.school_id == school_class.school_id,
            ClassMembership.class_id == school_class.id,
            ~provider_may_manage(),
        )
    )
    if (await session.execute(others.limit(1))).first():
        raise _managed_in_rollcall("its kind cannot change")
    await change_class_kind(
        session, actor=actor, school_class=school_class, kind=kind, allow_provider_managed=True
    )
