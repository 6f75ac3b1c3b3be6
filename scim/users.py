"""SCIM Users: a managed school's pupils and teachers as resources, and the operations on them.

What a provider may do to a user, and what each change does, is the domain's (db/provisioning/users.py): here
a User resource becomes a WantedUser, and a user becomes a User resource.

- `userType` is "Pupil" or "Teacher" (case-insensitive). Left out, as the default mappings of Microsoft Entra
  ID and Google send it, the user is a pupil: the least privileged guess.
- `active: false` deactivates (a soft delete), `active: true` restores; DELETE deprovisions, after which the
  user no longer exists for SCIM (404).
- A `password`, when given, must meet the school's policy and is never returned; without one, the user gets an
  unusable random one and signs in through the provider.
- A pupil's `emails` are not read: a child's data stays minimal.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import Actor
from db.models import ClassMembership, SchoolClass, User, UserType
from db.provisioning import users as provisioning
from db.provisioning.provenance import provider_may_manage_class
from db.provisioning.users import WantedUser
from db.users import clean_email, clean_name, clean_username
from scim.patch import document, patched
from scim.protocol import (
    MISSING,
    USER_SCHEMA,
    ScimError,
    Shape,
    external_id_of,
    field_of,
    flag_of,
    require_object,
    require_version,
    text_of,
    weak_etag,
)
from scim.query import Column, ListQuery, Table, Values, attribute_key, list_response, page_of

SHAPE = Shape(
    core=USER_SCHEMA,
    simple=("userName", "userType", "active", "externalId", "password"),
    complex={"name": ("givenName", "familyName")},
    multi={"emails": ("value", "type", "primary", "display")},
    read_only=("id", "meta", "schemas", "groups"),
)
USER_TYPES = {UserType.PUPIL: "Pupil", UserType.TEACHER: "Teacher"}

TABLE = Table(
    SHAPE,
    {
        "id": Column(User.id, "id"),
        "externalid": Column(User.external_id, case_exact=True),
        "username": Column(User.username),
        attribute_key("name", "givenName"): Column(func.nullif(User.first_name, "")),
        attribute_key("name", "familyName"): Column(func.nullif(User.surname, "")),
        "usertype": Column(
            case(
                (User.type == UserType.PUPIL, USER_TYPES[UserType.PUPIL]), else_=USER_TYPES[UserType.TEACHER]
            )
        ),
        "active": Column(User.deleted_at.is_(None), "boolean"),
        attribute_key("meta", "created"): Column(User.created_at, "datetime"),
        attribute_key("meta", "lastModified"): Column(User.updated_at, "datetime"),
        "groups": Values(
            {"value": Column(ClassMembership.class_id, "id")},
            lambda condition: (
                select(literal(1))
                .select_from(ClassMembership)
                .join(
                    SchoolClass,
                    (SchoolClass.school_id == ClassMembership.school_id)
                    & (SchoolClass.id == ClassMembership.class_id)
                    & provider_may_manage_class(),
                )
                .where(
                    ClassMembership.school_id == User.school_id, ClassMembership.user_id == User.id, condition
                )
                .exists()
            ),
        ),
    },
)


def version_of(user: User) -> str:
    return weak_etag(user.version)


def user_resource(user: User, classes: Sequence[SchoolClass], base_url: str) -> dict[str, Any]:
    resource: dict[str, Any] = {"schemas": [USER_SCHEMA], "id": str(user.id)}
    if user.external_id is not None:
        resource["externalId"] = user.external_id
    resource["userName"] = user.username
    name = {
        key: value for key, value in (("givenName", user.first_name), ("familyName", user.surname)) if value
    }
    if name:
        resource["name"] = name
    resource["userType"] = USER_TYPES[user.type]
    if user.email is not None:
        resource["emails"] = _emails(user.email)
    resource["active"] = user.deleted_at is None
    if classes:
        resource["groups"] = [
            {"value": str(c.id), "$ref": f"{base_url}/Groups/{c.id}", "display": c.name} for c in classes
        ]
    resource["meta"] = {
        "resourceType": "User",
        "created": user.created_at.isoformat(),
        "lastModified": user.updated_at.isoformat(),
        "location": f"{base_url}/Users/{user.id}",
        "version": version_of(user),
    }
    return resource


def _document(user: User) -> dict[str, Any]:
    """What PATCH operations start from: the user's writable attributes."""
    return {
        "userName": user.username,
        "name": {"givenName": user.first_name or None, "familyName": user.surname or None},
        "userType": USER_TYPES[user.type],
        "active": user.deleted_at is None,
        "externalId": user.external_id,
        "emails": _emails(user.email) if user.email else [],
    }


def _emails(email: str) -> list[dict[str, Any]]:
    return [{"value": email, "type": "work", "primary": True}]


def _email_of(emails: Any, type: UserType) -> str | None:
    """The `primary` address, else the first `work` one; a pupil's is not kept (their data stays minimal)."""
    if emails is None or emails is MISSING or type != UserType.TEACHER:
        return None
    if not isinstance(emails, list) or not all(isinstance(item, Mapping) for item in emails):
        raise ScimError(400, "emails is a list of objects.", "invalidValue")
    chosen = next(
        (item for item in emails if flag_of(field_of(item, "primary"), "emails.primary")), None
    ) or next((item for item in emails if str(field_of(item, "type")).lower() == "work"), None)
    return None if chosen is None else clean_email(text_of(field_of(chosen, "value"), "emails.value"))


def _wanted(found: Mapping[str, Any]) -> WantedUser:
    """What a User resource (or the document after a PATCH) asks for, its names cleaned."""
    username = text_of(found.get("userName"), "userName")
    if username is None:
        raise ScimError(400, "userName is required.", "invalidValue")
    # Entra's and Google's default mappings send no userType: the least privileged guess is a pupil.
    kind = text_of(found.get("userType"), "userType") or USER_TYPES[UserType.PUPIL]
    types = {label.lower(): member for member, label in USER_TYPES.items()}
    if kind.strip().lower() not in types:
        raise ScimError(400, "userType is Pupil or Teacher (Pupil when left out).", "invalidValue")
    name = found.get("name") or {}
    password = found.get("password", MISSING)
    type = types[kind.strip().lower()]
    return WantedUser(
        username=clean_username(username, field="userName"),
        first_name=clean_name(text_of(name.get("givenName"), "name.givenName") or "", field="name.givenName"),
        surname=clean_name(text_of(name.get("familyName"), "name.familyName") or "", field="name.familyName"),
        type=type,
        active=flag_of(found.get("active"), "active"),
        external_id=external_id_of(found.get("externalId")),
        password_given=password is not MISSING,
        password=text_of(password, "password"),
        email=_email_of(found.get("emails"), type),
    )


async def _resource(session: AsyncSession, user: User, base_url: str) -> dict[str, Any]:
    return user_resource(user, await provisioning.reloaded(session, user), base_url)


async def list_users(
    session: AsyncSession, *, school_id: uuid.UUID, asked: ListQuery, base_url: str
) -> dict[str, Any]:
    query = provisioning.provisioned_users(school_id)
    total, users = await page_of(session, query, TABLE, asked, order=(User.created_at, User.id))
    classes = await provisioning.classes_shown(session, school_id, [user.id for user in users])
    return list_response(
        total, asked, [user_resource(user, classes.get(user.id, []), base_url) for user in users]
    )


async def get_user(
    session: AsyncSession, *, school_id: uuid.UUID, user_id: str, base_url: str
) -> dict[str, Any]:
    return await _resource(
        session, await provisioning.provisioned_user(session, school_id, user_id), base_url
    )


async def create_user(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, body: Any, base_url: str
) -> dict[str, Any]:
    wanted = _wanted(document(require_object(body, USER_SCHEMA), SHAPE))
    user = await provisioning.create_provisioned_user(
        session, school_id=school_id, actor=actor, wanted=wanted
    )
    return await _resource(session, user, base_url)


async def _locked(session: AsyncSession, school_id: uuid.UUID, user_id: str, if_match: str | None) -> User:
    user = await provisioning.locked_user(session, school_id, user_id)
    require_version(version_of(user), if_match)
    return user


async def replace_user(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    user_id: str,
    body: Any,
    if_match: str | None,
    base_url: str,
) -> dict[str, Any]:
    """PUT: the user becomes what the body says; `active` and `password`, when left out, stay as they are."""
    user = await _locked(session, school_id, user_id, if_match)
    wanted = _wanted(document(require_object(body, USER_SCHEMA), SHAPE))
    await provisioning.update_provisioned_user(session, actor=actor, user=user, wanted=wanted)
    return await _resource(session, user, base_url)


async def patch_user(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    user_id: str,
    body: Any,
    if_match: str | None,
    base_url: str,
) -> dict[str, Any]:
    user = await _locked(session, school_id, user_id, if_match)
    wanted = _wanted(patched(_document(user), body, SHAPE))
    await provisioning.update_provisioned_user(session, actor=actor, user=user, wanted=wanted)
    return await _resource(session, user, base_url)


async def delete_user(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, user_id: str, if_match: str | None
) -> None:
    """Deprovisions: the user is gone for SCIM; admins still see them among deleted users."""
    user = await _locked(session, school_id, user_id, if_match)
    await provisioning.deprovision_user(session, actor=actor, user=user)
