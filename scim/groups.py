"""SCIM Groups: a managed school's classes as resources, and the operations on them.

What a provider may do to a class, and what each change does, is the domain's (db/provisioning/classes.py):
here a Group resource becomes a WantedClass, and a class becomes a Group resource.

A group's kind is the `kind` attribute of the schema extension
`urn:rollcall:params:scim:schemas:extension:class:2.0:Group`: "registration" or "teaching" (the default, when
the provider does not send the extension). Members are users; groups of groups are not supported.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, case, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import Actor
from db.classes import clean_class_name
from db.models import ClassKind, ClassMembership, SchoolClass, User
from db.provisioning import classes as provisioning
from db.provisioning.classes import WantedClass
from db.provisioning.provenance import provider_may_manage
from scim.patch import document, patched
from scim.protocol import (
    CLASS_EXTENSION,
    GROUP_SCHEMA,
    MISSING,
    ScimError,
    Shape,
    external_id_of,
    field_of,
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
    return weak_etag(provisioning.class_version(school_class, members))


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


def _wanted(found: Mapping[str, Any]) -> WantedClass:
    """What a Group resource (or the document after a PATCH) asks for, its name cleaned."""
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
    return WantedClass(
        name=clean_class_name(name),
        kind=kinds[kind.strip().lower()],
        external_id=external_id_of(found.get("externalId")),
        members=list(members),
    )


async def _resource(session: AsyncSession, school_class: SchoolClass, base_url: str) -> dict[str, Any]:
    return group_resource(school_class, await provisioning.reloaded(session, school_class), base_url)


async def list_groups(
    session: AsyncSession, *, school_id: uuid.UUID, asked: ListQuery, base_url: str
) -> dict[str, Any]:
    query = provisioning.provisioned_classes(school_id)
    total, classes = await page_of(
        session, query, TABLE, asked, order=(SchoolClass.created_at, SchoolClass.id)
    )
    members = await provisioning.members_shown(session, school_id, [c.id for c in classes])
    return list_response(total, asked, [group_resource(c, members.get(c.id, []), base_url) for c in classes])


async def get_group(
    session: AsyncSession, *, school_id: uuid.UUID, group_id: str, base_url: str
) -> dict[str, Any]:
    school_class = await provisioning.provisioned_class(session, school_id, group_id)
    return await _resource(session, school_class, base_url)


async def create_group(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, body: Any, base_url: str
) -> dict[str, Any]:
    wanted = _wanted(document(require_object(body, GROUP_SCHEMA), SHAPE))
    school_class = await provisioning.create_provisioned_class(
        session, school_id=school_id, actor=actor, wanted=wanted
    )
    return await _resource(session, school_class, base_url)


async def _locked(
    session: AsyncSession, school_id: uuid.UUID, group_id: str, if_match: str | None
) -> tuple[SchoolClass, list[uuid.UUID]]:
    school_class, members = await provisioning.locked_class(session, school_id, group_id)
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
    await provisioning.update_provisioned_class(
        session, actor=actor, school_class=school_class, members=members, wanted=wanted
    )
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
    await provisioning.update_provisioned_class(
        session, actor=actor, school_class=school_class, members=members, wanted=wanted
    )
    return await _resource(session, school_class, base_url)


async def delete_group(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, group_id: str, if_match: str | None
) -> None:
    school_class, _ = await _locked(session, school_id, group_id, if_match)
    await provisioning.delete_provisioned_class(session, actor=actor, school_class=school_class)
