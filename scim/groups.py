"""SCIM Groups: a managed school's classes, as its provider creates, reads, changes and deletes them.

A group's kind is the `kind` attribute of the schema extension
`urn:rollcall:params:scim:schemas:extension:class:2.0:Group`: "registration" or "teaching" (the default, when
the provider does not send the extension). The one
registration class rule holds: a user added to a registration group leaves their previous one, and a group
that becomes a registration group takes its members out of theirs. Members are users; groups of groups are
not supported.

A provider manages only the classes it created (`provider_may_manage_class` in scim/protocol.py, recorded in
`provisioned_at`), and within them only the users it provisioned (`provider_may_manage`): every other class
does not exist for it, and every other member stays where they are.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor
from db.classes import (
    DELETING,
    NAME_INDEX,
    assign_to_class,
    clean_class_name,
    create_class,
    delete_class,
    remove_from_class,
    rename_class,
)
from db.models import ClassKind, ClassMembership, SchoolClass, User
from db.text import shown
from scim.patch import document, patched
from scim.protocol import (
    CLASS_EXTENSION,
    GROUP_SCHEMA,
    MISSING,
    ScimError,
    Shape,
    external_id_of,
    field_of,
    kept_from_provider,
    provider_may_manage,
    provider_may_manage_class,
    require_object,
    require_version,
    text_of,
    weak_etag,
)
from scim.query import Column, ListQuery, Table, Values, attribute_key, list_response, page_of

SHAPE = Shape(
    core=GROUP_SCHEMA,
    simple=("displayName", "externalId"),
    complex={CLASS_EXTENSION: ("kind",)},
    multi={"members": ("value", "$ref", "type", "display")},
)
KINDS = {ClassKind.REGISTRATION: "registration", ClassKind.TEACHING: "teaching"}
EXTERNAL_ID_INDEX = "uq_classes_school_id_external_id"


def _members_where(condition: Any) -> Any:
    """Some member of the class, among the users the provider may manage, meets `condition`."""
    return (
        select(literal(1))
        .select_from(ClassMembership)
        .join(
            User,
            and_(
                User.school_id == ClassMembership.school_id,
                User.id == ClassMembership.user_id,
                provider_may_manage(),
            ),
        )
        .where(
            ClassMembership.school_id == SchoolClass.school_id,
            ClassMembership.class_id == SchoolClass.id,
            condition,
        )
        .exists()
    )


TABLE = Table(
    SHAPE,
    {
        "id": Column(SchoolClass.id, "id"),
        "externalid": Column(SchoolClass.external_id, case_exact=True),
        "displayname": Column(SchoolClass.name),
        attribute_key(CLASS_EXTENSION, "kind"): Column(
            case(
                (SchoolClass.kind == ClassKind.REGISTRATION, KINDS[ClassKind.REGISTRATION]),
                else_=KINDS[ClassKind.TEACHING],
            )
        ),
        attribute_key("meta", "created"): Column(SchoolClass.created_at, "datetime"),
        "members": Values(
            {"value": Column(ClassMembership.user_id, "id"), "type": Column(literal("User"))}, _members_where
        ),
    },
)


def version_of(school_class: SchoolClass, members: Sequence[uuid.UUID]) -> str:
    """Classes keep no version number, so the tag is a digest of everything a Group shows."""
    shown = [school_class.name, school_class.kind.value, school_class.external_id, sorted(map(str, members))]
    return weak_etag(hashlib.sha256(json.dumps(shown).encode()).hexdigest()[:16])


def group_resource(school_class: SchoolClass, members: Sequence[uuid.UUID], base_url: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"schemas": [GROUP_SCHEMA, CLASS_EXTENSION], "id": str(school_class.id)}
    if school_class.external_id is not None:
        resource["externalId"] = school_class.external_id
    resource["displayName"] = school_class.name
    if members:
        resource["members"] = [
            {"value": str(user_id), "$ref": f"{base_url}/Users/{user_id}", "type": "User"}
            for user_id in members
        ]
    resource[CLASS_EXTENSION] = {"kind": KINDS[school_class.kind]}
    resource["meta"] = {
        "resourceType": "Group",
        "created": school_class.created_at.isoformat(),
        "location": f"{base_url}/Groups/{school_class.id}",
        "version": version_of(school_class, members),
    }
    return resource


async def _members(
    session: AsyncSession, school_id: uuid.UUID, class_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each class's members that the provider may manage (deactivated ones included), in one statement; other
    members are not shown, so a PUT or PATCH that leaves them out does not remove them."""
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


@dataclass(frozen=True, slots=True)
class _Wanted:
    name: str
    kind: ClassKind
    external_id: str | None
    members: list[uuid.UUID]


def _wanted(found: Mapping[str, Any]) -> _Wanted:
    name = text_of(found.get("displayName"), "displayName")
    if name is None:
        raise ScimError(400, "displayName is required.", "invalidValue")
    kind = text_of((found.get(CLASS_EXTENSION) or {}).get("kind"), "kind") or KINDS[ClassKind.TEACHING]
    kinds = {label: member for member, label in KINDS.items()}
    if kind.strip().lower() not in kinds:
        raise ScimError(400, "A group's kind is registration or teaching.", "invalidValue")
    members: dict[uuid.UUID, None] = {}
    for member in found.get("members") or []:
        if not isinstance(member, Mapping):
            raise ScimError(400, "Each member is an object with a value.", "invalidValue")
        kind_of_member = field_of(member, "type")
        if kind_of_member not in (MISSING, None) and str(kind_of_member).lower() != "user":
            raise ScimError(
                400, "A group's members are users; groups in groups are not supported.", "invalidValue"
            )
        value = field_of(member, "value")
        try:
            members[uuid.UUID(str(value))] = None
        except ValueError:
            raise ScimError(400, f"No user has the id {value}.", "invalidValue") from None
    return _Wanted(
        name=clean_class_name(name),
        kind=kinds[kind.strip().lower()],
        external_id=external_id_of(found.get("externalId")),
        members=list(members),
    )


async def _require_valid(
    session: AsyncSession, school_id: uuid.UUID, wanted: _Wanted, except_class: uuid.UUID | None = None
) -> None:
    if wanted.external_id is not None:
        others = select(SchoolClass.id).where(
            SchoolClass.school_id == school_id, SchoolClass.external_id == wanted.external_id
        )
        if except_class is not None:
            others = others.where(SchoolClass.id != except_class)
        if (await session.execute(others)).first():
            raise ScimError(
                409, f"The externalId '{shown(wanted.external_id)}' belongs to another group.", "uniqueness"
            )
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
        raise ScimError(400, f"No user has the id {', '.join(unknown)}.", "invalidValue")


async def _visible(
    session: AsyncSession, school_id: uuid.UUID, group_id: str, *, lock: bool = False
) -> SchoolClass:
    """A class the provider may manage, or 404 (the same for every other class: see provider_may_manage_class)."""
    try:
        class_id = uuid.UUID(group_id)
    except ValueError:
        raise ScimError(404, f"No group has the id {group_id}.") from None
    query = select(SchoolClass).where(
        SchoolClass.school_id == school_id, SchoolClass.id == class_id, provider_may_manage_class()
    )
    school_class = (
        await session.execute(query.with_for_update(**DELETING) if lock else query)
    ).scalar_one_or_none()
    if school_class is None:
        raise ScimError(404, f"No group has the id {group_id}.")
    return school_class


async def _resource(session: AsyncSession, school_class: SchoolClass, base_url: str) -> dict[str, Any]:
    await session.refresh(school_class)
    members = await _members(session, school_class.school_id, [school_class.id])
    return group_resource(school_class, members.get(school_class.id, []), base_url)


async def list_groups(
    session: AsyncSession, *, school_id: uuid.UUID, asked: ListQuery, base_url: str
) -> dict[str, Any]:
    query = select(SchoolClass).where(SchoolClass.school_id == school_id, provider_may_manage_class())
    total, classes = await page_of(
        session, query, TABLE, asked, order=(SchoolClass.created_at, SchoolClass.id)
    )
    members = await _members(session, school_id, [c.id for c in classes])
    return list_response(total, asked, [group_resource(c, members.get(c.id, []), base_url) for c in classes])


async def get_group(
    session: AsyncSession, *, school_id: uuid.UUID, group_id: str, base_url: str
) -> dict[str, Any]:
    return await _resource(session, await _visible(session, school_id, group_id), base_url)


async def create_group(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, body: Any, base_url: str
) -> dict[str, Any]:
    wanted = _wanted(document(require_object(body, GROUP_SCHEMA), SHAPE))
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
    return await _resource(session, school_class, base_url)


async def _locked(
    session: AsyncSession, school_id: uuid.UUID, group_id: str, if_match: str | None
) -> tuple[SchoolClass, list[uuid.UUID]]:
    # FOR UPDATE: membership changes take a shared lock on the class, so the version checked here holds.
    school_class = await _visible(session, school_id, group_id, lock=True)
    members = (await _members(session, school_id, [school_class.id])).get(school_class.id, [])
    require_version(version_of(school_class, members), if_match)
    return school_class, members


async def replace_group(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    group_id: str,
    body: Any,
    if_match: str | None,
    base_url: str,
) -> dict[str, Any]:
    school_class, members = await _locked(session, school_id, group_id, if_match)
    wanted = _wanted(document(require_object(body, GROUP_SCHEMA), SHAPE))
    await _require_valid(session, school_id, wanted, except_class=school_class.id)
    await _apply(session, actor, school_class, members, wanted)
    return await _resource(session, school_class, base_url)


async def patch_group(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    group_id: str,
    body: Any,
    if_match: str | None,
    base_url: str,
) -> dict[str, Any]:
    school_class, members = await _locked(session, school_id, group_id, if_match)
    current = {
        "displayName": school_class.name,
        "externalId": school_class.external_id,
        "members": [{"value": str(user_id), "type": "User"} for user_id in members],
        CLASS_EXTENSION: {"kind": KINDS[school_class.kind]},
    }
    wanted = _wanted(patched(current, body, SHAPE))
    await _require_valid(session, school_id, wanted, except_class=school_class.id)
    await _apply(session, actor, school_class, members, wanted)
    return await _resource(session, school_class, base_url)


async def delete_group(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, group_id: str, if_match: str | None
) -> None:
    """Refused while a member the provider does not manage uses the class (see kept_from_provider)."""
    school_class, _ = await _locked(session, school_id, group_id, if_match)
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
        raise ScimError(
            400,
            "This group has members that are managed in Rollcall itself, so it cannot be deleted.",
            "mutability",
        )
    await delete_class(
        session, school_id=school_id, actor=actor, class_id=school_class.id, allow_provider_managed=True
    )


async def _apply(
    session: AsyncSession,
    actor: Actor,
    school_class: SchoolClass,
    members: Sequence[uuid.UUID],
    wanted: _Wanted,
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
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as error:
            if EXTERNAL_ID_INDEX not in str(error.orig):
                raise
            raise ScimError(
                409, f"The externalId '{shown(wanted.external_id)}' belongs to another group.", "uniqueness"
            ) from None
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action="class.updated",
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
    """A teaching group becoming a registration group moves its members out of their registration classes
    (the memberships follow the class's kind through their foreign key)."""
    school_id, class_id = school_class.school_id, school_class.id
    # Their memberships follow the kind, so it would move users the provider may not change.
    others = (
        select(ClassMembership.user_id)
        .join(
            User,
            and_(
                User.school_id == ClassMembership.school_id,
                User.id == ClassMembership.user_id,
            ),
        )
        .where(
            ClassMembership.school_id == school_id,
            ClassMembership.class_id == class_id,
            ~provider_may_manage(),
        )
    )
    if (await session.execute(others.limit(1))).first():
        raise ScimError(
            400,
            "This group has members that are managed in Rollcall itself, so its kind cannot change.",
            "mutability",
        )
    taken = select(SchoolClass.id).where(
        SchoolClass.school_id == school_id,
        SchoolClass.kind == kind,
        SchoolClass.name_key == school_class.name_key,
    )
    if (await session.execute(taken)).first():
        raise ScimError(
            409, f"There is already a {KINDS[kind]} class called '{school_class.name}'.", "uniqueness"
        )
    moved: dict[str, str] = {}
    if kind == ClassKind.REGISTRATION:
        members = select(ClassMembership.user_id).where(
            ClassMembership.school_id == school_id, ClassMembership.class_id == class_id
        )
        # In id order, as every membership change locks its users, so none of them can deadlock.
        await session.execute(
            select(User.id)
            .where(User.school_id == school_id, User.id.in_(members))
            .order_by(User.id)
            .with_for_update(key_share=True)
        )
        moved = {
            str(user_id): str(previous)
            for user_id, previous in await session.execute(
                delete(ClassMembership)
                .where(
                    ClassMembership.school_id == school_id,
                    ClassMembership.kind == ClassKind.REGISTRATION,
                    ClassMembership.user_id.in_(members),
                )
                .returning(ClassMembership.user_id, ClassMembership.class_id)
            )
        }
    before, school_class.kind = school_class.kind, kind
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        if NAME_INDEX not in str(error.orig):
            raise
        raise ScimError(
            409, f"There is already a {KINDS[kind]} class called '{school_class.name}'.", "uniqueness"
        ) from None
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action="class.kind_changed",
        targets=[uuid.UUID(user_id) for user_id in sorted(moved)],
        summary={
            "class_id": str(class_id),
            "name": school_class.name,
            "from": before.value,
            "to": kind.value,
            "previous_class_ids": moved,
        },
    )
