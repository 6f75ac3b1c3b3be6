"""The users a school's provider provisions: it creates them, makes them what it wants, and deletes them.

- A provider manages only the users it provisioned (provider_may_manage, recorded in `provisioned_at` when it
  creates them), never an admin: every other user does not exist for it.
- Inactive is a soft delete: sessions end, and a pupil's login cards stop working for good (they are rotated).
  Active again restores. Deprovisioning is a soft delete too, after which the user no longer exists for the
  provider and their username and external id are free again.
- A password, when given, must meet the school's policy; without one, the user gets an unusable random one
  and signs in through the provider.

The messages name the attributes as the provider sends them (`userName`, `externalId`).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.classes import classes_of_users
from db.errors import DomainError, ErrorCode, Problem, on_collision
from db.manage_users import UserField, add_user, delete_users, lock_roster, restore_users, update_user_field
from db.models import School, SchoolClass, User, UserType
from db.passwords import hash_password_async, weak_password
from db.provisioning.provenance import provider_may_manage, provider_may_manage_class
from db.sessions import revoke_sessions
from db.text import shown
from db.users import email_taken_problem, mark_edited

EXTERNAL_ID_INDEX = "uq_users_school_id_external_id"


@dataclass(frozen=True, slots=True)
class WantedUser:
    """What the provider wants a user to be, its names already clean. `active` None leaves the user active or
    not as they are; `password_given` False leaves the password as it is, and a None `password` with it True
    gives an unusable one."""

    username: str
    first_name: str
    surname: str
    type: UserType
    active: bool | None
    external_id: str | None
    password_given: bool
    password: str | None
    email: str | None


def provisioned_users(school_id: uuid.UUID) -> Select[User]:
    """The school's users the provider may manage (a list's filters, order and page come on top)."""
    return select(User).where(User.school_id == school_id, provider_may_manage())


def _no_such_user(user_id: str) -> DomainError:
    return DomainError(Problem(ErrorCode.NOT_FOUND, f"No user has the id {user_id}."))


async def provisioned_user(
    session: AsyncSession, school_id: uuid.UUID, user_id: str, *, lock: bool = False
) -> User:
    """The user `user_id` names, if the provider may manage them, else NOT_FOUND: the same for every other user
    and for anything that is not an id (see provider_may_manage)."""
    try:
        wanted = uuid.UUID(user_id)
    except ValueError:
        raise _no_such_user(user_id) from None
    query = select(User).where(User.school_id == school_id, User.id == wanted, provider_may_manage())
    user = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if user is None:
        raise _no_such_user(user_id)
    return user


async def locked_user(session: AsyncSession, school_id: uuid.UUID, user_id: str) -> User:
    """The user, locked for a change: the school first, then the user, the order an admin's changes lock in."""
    await lock_roster(session, school_id)
    return await provisioned_user(session, school_id, user_id, lock=True)


async def classes_shown(
    session: AsyncSession, school_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[SchoolClass]]:
    """The classes of each user the provider is shown: its own (provider_may_manage_class)."""
    return await classes_of_users(
        session, school_id=school_id, user_ids=user_ids, among=provider_may_manage_class()
    )


async def reloaded(session: AsyncSession, user: User) -> list[SchoolClass]:
    """Read the user again after a change, and the classes of theirs the provider is shown."""
    await session.refresh(user)
    return (await classes_shown(session, user.school_id, [user.id])).get(user.id, [])


def _external_id_index(external_id: str | None) -> dict[str, Callable[[], Exception]]:
    return {EXTERNAL_ID_INDEX: lambda: _external_id_taken(external_id)}


def _external_id_taken(external_id: str | None) -> DomainError:
    return DomainError(
        Problem(
            ErrorCode.EXTERNAL_ID_TAKEN,
            f"The externalId '{shown(external_id)}' belongs to another user.",
            "externalId",
        )
    )


async def _require_unique(
    session: AsyncSession, school_id: uuid.UUID, wanted: WantedUser, except_user: uuid.UUID | None = None
) -> None:
    """userName, externalId and a teacher's email address are unique among the users the provider knows,
    deactivated ones included (so that reactivating them cannot clash), and among every active user.

    The database keeps an address unique among a school's active users, whoever made them, so a clash with a
    user the provider does not know cannot pass. It gets the ordinary EMAIL_TAKEN instead, word for word the
    answer for a clash with one of the provider's own users, and never says whose the address is: the same
    rule as for userName, so the answer tells a provider no more than that the value is taken."""
    others = select(User.id).where(
        User.school_id == school_id, or_(provider_may_manage(), User.deleted_at.is_(None))
    )
    if except_user is not None:
        others = others.where(User.id != except_user)
    if (await session.execute(others.where(func.lower(User.username) == wanted.username.lower()))).first():
        raise DomainError(
            Problem(
                ErrorCode.USERNAME_TAKEN, f"The userName '{wanted.username}' is already taken.", "userName"
            )
        )
    if (
        wanted.external_id is not None
        and (await session.execute(others.where(User.external_id == wanted.external_id))).first()
    ):
        raise _external_id_taken(wanted.external_id)
    if (
        wanted.email is not None
        and (await session.execute(others.where(func.lower(User.email) == wanted.email.lower()))).first()
    ):
        # The words a concurrent clash on the unique index is answered with.
        raise DomainError(email_taken_problem(wanted.email))


async def create_provisioned_user(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, wanted: WantedUser
) -> User:
    await _require_unique(session, school_id, wanted)
    with on_collision(_external_id_index(wanted.external_id)):
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
    user.provisioned_at = func.now()
    await session.flush()
    if wanted.active is False:
        await _deactivate(session, actor, user)
    return user


async def update_provisioned_user(
    session: AsyncSession, *, actor: Actor, user: User, wanted: WantedUser
) -> None:
    """Make the user (locked_user) what the provider wants, one domain change at a time: restore first,
    deactivate last."""
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
            await _change_field(session, actor, user, field, value)
    if wanted.email is not None and wanted.email != user.email:
        await _change_field(session, actor, user, UserField.EMAIL, wanted.email)
    if wanted.external_id != user.external_id:
        before, user.external_id = user.external_id, wanted.external_id
        await _save(session, user, wanted.external_id)
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.USER_UPDATED,
            targets=[user.id],
            summary={"field": "EXTERNAL_ID", "from": before, "to": wanted.external_id},
        )
    if wanted.password_given:
        await _set_password(session, actor, user, wanted.password)
    if wanted.active is False and user.deleted_at is None:
        await _deactivate(session, actor, user)


async def deprovision_user(session: AsyncSession, *, actor: Actor, user: User) -> None:
    """A soft delete of the user (locked_user), after which they are gone for the provider; admins still see
    them among deleted users."""
    if user.deleted_at is None:
        await _deactivate(session, actor, user)
    user.deprovisioned_at = func.now()
    user.version += 1
    await session.flush()
    await audit.record_by(
        session,
        actor,
        school_id=user.school_id,
        action=AuditAction.USER_DEPROVISIONED,
        targets=[user.id],
        summary={"username": user.username, "external_id": user.external_id},
    )


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


async def _save(session: AsyncSession, user: User, external_id: str | None) -> None:
    """Write the columns of the user that were set, as an edit; a clash of external ids (the unique index
    decides) is EXTERNAL_ID_TAKEN, quoting `external_id`."""
    mark_edited(user)
    with on_collision(_external_id_index(external_id)):
        await session.flush()
    await session.refresh(user)


async def _set_password(session: AsyncSession, actor: Actor, user: User, password: str | None) -> None:
    """The provider's password for the user (the school's policy applies); without one, an unusable one."""
    if password is not None:
        school = await session.get_one(School, user.school_id)
        if problems := weak_password(
            password,
            staff=user.type == UserType.TEACHER,
            pupil_min_length=school.pupil_min_password_length,
            field="password",
        ):
            raise DomainError(*problems)
    user.password_hash = await hash_password_async(password or secrets.token_urlsafe(32))
    user.must_change_password = False
    await _save(session, user, user.external_id)
    await revoke_sessions(session, school_id=user.school_id, user_ids=[user.id])
    await audit.record_by(
        session,
        actor,
        school_id=user.school_id,
        action=AuditAction.USER_PASSWORD_SET,
        targets=[user.id],
        summary={"by": "provider", "removed": password is None},
    )
