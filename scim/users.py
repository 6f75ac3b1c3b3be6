"""SCIM Users: a managed school's pupils and teachers, as its provider creates, reads, changes and deletes
them.

Every change goes through the same domain functions as the admin's GraphQL mutations (with
`allow_provider_managed`), so the same rules hold and the same audit events are written, with the
provisioning token as the actor.

- A provider manages only the users it provisioned (`provider_may_manage` in scim/protocol.py, recorded in
  `provisioned_at` when it creates them), never an admin: every other user does not exist for it.

- `userType` is "Pupil" or "Teacher" (case-insensitive). Left out, as the default mappings of Microsoft Entra
  ID and Google send it, the user is a pupil: the least privileged guess.
- `active: false` is a soft delete: sessions end, and a pupil's login cards stop working for good (they are
  rotated). `active: true` restores. DELETE is a soft delete too, after which the user no longer exists for
  SCIM (404) and their userName and externalId are free again.
- A `password`, when given, must meet the school's policy and is never returned; without one, the user gets an
  unusable random one and signs in through the provider.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor
from db.classes import classes_of_users
from db.manage_users import UserField, add_user, delete_users, lock_roster, restore_users, update_user_field
from db.models import ClassMembership, School, SchoolClass, User, UserType
from db.passwords import hash_password_async, password_problem
from db.sessions import revoke_sessions
from db.text import shown
from db.users import clean_email, clean_name, clean_username, mark_edited
from scim.patch import document, patched
from scim.protocol import (
    MISSING,
    USER_SCHEMA,
    ScimError,
    Shape,
    external_id_of,
    field_of,
    flag_of,
    provider_may_manage,
    provider_may_manage_class,
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
EXTERNAL_ID_INDEX = "uq_users_school_id_external_id"

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


@dataclass(frozen=True, slots=True)
class _Wanted:
    username: str
    first_name: str
    surname: str
    type: UserType
    active: bool | None
    external_id: str | None
    password_given: bool
    password: str | None
    email: str | None


def _wanted(found: Mapping[str, Any]) -> _Wanted:
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
    return _Wanted(
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


async def _require_unique(
    session: AsyncSession, school_id: uuid.UUID, wanted: _Wanted, except_user: uuid.UUID | None = None
) -> None:
    """userName, externalId and a teacher's email address are unique among the users the provider knows,
    deactivated ones included (so that reactivating them cannot clash), and among every active user.

    The database keeps an address unique among a school's active users, whoever made them, so a clash with a
    user the provider does not know cannot pass. It gets the ordinary 409 instead, word for word the answer for
    a clash with one of the provider's own users, and never says whose the address is: the same rule as for
    userName, so the answer tells a provider no more than that the value is taken."""
    others = select(User.id).where(
        User.school_id == school_id, or_(provider_may_manage(), User.deleted_at.is_(None))
    )
    if except_user is not None:
        others = others.where(User.id != except_user)
    if (await session.execute(others.where(func.lower(User.username) == wanted.username.lower()))).first():
        raise ScimError(409, f"The userName '{wanted.username}' is already taken.", "uniqueness")
    if (
        wanted.external_id is not None
        and (await session.execute(others.where(User.external_id == wanted.external_id))).first()
    ):
        raise ScimError(
            409, f"The externalId '{shown(wanted.external_id)}' belongs to another user.", "uniqueness"
        )
    if (
        wanted.email is not None
        and (await session.execute(others.where(func.lower(User.email) == wanted.email.lower()))).first()
    ):
        # The words of email_taken_problem, which a concurrent clash on the unique index answers with.
        raise ScimError(409, f"The email address '{wanted.email}' belongs to another user.", "uniqueness")


def _external_id_taken(error: IntegrityError, external_id: str | None) -> ScimError:
    if EXTERNAL_ID_INDEX not in str(error.orig):
        raise error
    return ScimError(409, f"The externalId '{shown(external_id)}' belongs to another user.", "uniqueness")


async def _visible(session: AsyncSession, school_id: uuid.UUID, user_id: str, *, lock: bool = False) -> User:
    """A user the provider may manage, or 404 (the same for every other user: see provider_may_manage)."""
    try:
        wanted = uuid.UUID(user_id)
    except ValueError:
        raise ScimError(404, f"No user has the id {user_id}.") from None
    query = select(User).where(User.school_id == school_id, User.id == wanted, provider_may_manage())
    user = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if user is None:
        raise ScimError(404, f"No user has the id {user_id}.")
    return user


async def _groups_of(
    session: AsyncSession, school_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[SchoolClass]]:
    """The classes a user's `groups` shows: the provider's own (provider_may_manage_class)."""
    return await classes_of_users(
        session, school_id=school_id, user_ids=user_ids, among=provider_may_manage_class()
    )


async def _resource(session: AsyncSession, user: User, base_url: str) -> dict[str, Any]:
    await session.refresh(user)
    classes = await _groups_of(session, user.school_id, [user.id])
    return user_resource(user, classes.get(user.id, []), base_url)


async def list_users(
    session: AsyncSession, *, school_id: uuid.UUID, asked: ListQuery, base_url: str
) -> dict[str, Any]:
    query = select(User).where(User.school_id == school_id, provider_may_manage())
    total, users = await page_of(session, query, TABLE, asked, order=(User.created_at, User.id))
    classes = await _groups_of(session, school_id, [user.id for user in users])
    return list_response(
        total, asked, [user_resource(user, classes.get(user.id, []), base_url) for user in users]
    )


async def get_user(
    session: AsyncSession, *, school_id: uuid.UUID, user_id: str, base_url: str
) -> dict[str, Any]:
    return await _resource(session, await _visible(session, school_id, user_id), base_url)


async def create_user(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, body: Any, base_url: str
) -> dict[str, Any]:
    wanted = _wanted(document(require_object(body, USER_SCHEMA), SHAPE))
    await _require_unique(session, school_id, wanted)
    try:
        user = await add_user(
            session,
            school_id=school_id,
            actor=actor,
            username=wanted.username,
            password=wanted.password or secrets.token_urlsafe(32),
            type=wanted.type,
            first_name=wanted.first_name,
            surname=wanted.surname,
            external_id=wanted.external_id,
            email=wanted.email,
            allow_provider_managed=True,
        )
    except IntegrityError as error:
        raise _external_id_taken(error, wanted.external_id) from None
    user.provisioned_at = func.now()
    await session.flush()
    if wanted.active is False:
        await _deactivate(session, actor, user)
    return await _resource(session, user, base_url)


async def _locked(session: AsyncSession, school_id: uuid.UUID, user_id: str, if_match: str | None) -> User:
    # The school first, then the user: the order the admin's own changes take their locks in.
    await lock_roster(session, school_id)
    user = await _visible(session, school_id, user_id, lock=True)
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
    await _apply(session, actor, user, _wanted(document(require_object(body, USER_SCHEMA), SHAPE)))
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
    await _apply(session, actor, user, _wanted(patched(_document(user), body, SHAPE)))
    return await _resource(session, user, base_url)


async def delete_user(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, user_id: str, if_match: str | None
) -> None:
    """A soft delete, after which the user is gone for SCIM; admins still see them among deleted users."""
    user = await _locked(session, school_id, user_id, if_match)
    if user.deleted_at is None:
        await _deactivate(session, actor, user)
    user.deprovisioned_at = func.now()
    user.version += 1
    await session.flush()
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action="user.deprovisioned",
        targets=[user.id],
        summary={"username": user.username, "external_id": user.external_id},
    )


async def _apply(session: AsyncSession, actor: Actor, user: User, wanted: _Wanted) -> None:
    """Make the user what the provider wants, one domain change at a time: restore first, deactivate last."""
    school_id = user.school_id
    await _require_unique(session, school_id, wanted, except_user=user.id)
    if wanted.active and user.deleted_at is not None:
        await restore_users(
            session, school_id=school_id, actor=actor, user_ids=[user.id], allow_provider_managed=True
        )
    # An address goes before a teacher becomes a pupil, and comes after a pupil becomes a teacher.
    if wanted.email is None and user.email is not None:
        await _change_field(session, actor, user, UserField.EMAIL, "")
    for field, value, current in (
        (UserField.USERNAME, wanted.username, user.username),
        (UserField.FIRST_NAME, wanted.first_name, user.first_name),
        (UserField.SURNAME, wanted.surname, user.surname),
        (UserField.TYPE, wanted.type.value, user.type.value),
    ):
        if value != current:
            await update_user_field(
                session,
                school_id=school_id,
                actor=actor,
                user_id=user.id,
                field=field,
                value=value,
                expected_version=user.version,
                allow_provider_managed=True,
                including_deleted=True,
            )
    if wanted.email is not None and wanted.email != user.email:
        await _change_field(session, actor, user, UserField.EMAIL, wanted.email)
    if wanted.external_id != user.external_id:
        before, user.external_id = user.external_id, wanted.external_id
        await _changed(session, user, wanted.external_id)
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action="user.updated",
            targets=[user.id],
            summary={"field": "EXTERNAL_ID", "from": before, "to": wanted.external_id},
        )
    if wanted.password_given:
        await _set_password(session, actor, user, wanted.password)
    if wanted.active is False and user.deleted_at is None:
        await _deactivate(session, actor, user)


async def _change_field(
    session: AsyncSession, actor: Actor, user: User, field: UserField, value: str
) -> None:
    await update_user_field(
        session,
        school_id=user.school_id,
        actor=actor,
        user_id=user.id,
        field=field,
        value=value,
        expected_version=user.version,
        allow_provider_managed=True,
        including_deleted=True,
    )


async def _deactivate(session: AsyncSession, actor: Actor, user: User) -> None:
    # Deleting rotates a pupil's login codes, so old cards do not come back if the provider reactivates them.
    await delete_users(
        session, school_id=user.school_id, actor=actor, user_ids=[user.id], allow_provider_managed=True
    )


async def _changed(session: AsyncSession, user: User, external_id: str | None) -> None:
    mark_edited(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise _external_id_taken(error, external_id) from None
    await session.refresh(user)


async def _set_password(session: AsyncSession, actor: Actor, user: User, password: str | None) -> None:
    """The provider's password for the user (the school's policy applies); without one, an unusable one."""
    if password is not None:
        school = await session.get_one(School, user.school_id)
        if problem := password_problem(
            password, staff=user.type == UserType.TEACHER, pupil_min_length=school.pupil_min_password_length
        ):
            raise ScimError(400, problem, "invalidValue")
    user.password_hash = await hash_password_async(password or secrets.token_urlsafe(32))
    user.must_change_password = False
    await _changed(session, user, user.external_id)
    await revoke_sessions(session, school_id=user.school_id, user_ids=[user.id])
    await audit.record_by(
        session,
        actor,
        school_id=user.school_id,
        action="user.password_set",
        targets=[user.id],
        summary={"by": "provider", "removed": password is None},
    )
