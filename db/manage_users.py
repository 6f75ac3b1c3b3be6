"""What an admin does on the "manage users" screen: add, edit a cell, delete, restore, reset passwords.

Every operation runs in the caller's transaction and raises DomainError with every problem it finds, so a
batch either applies whole or changes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.classes import place_new_user, shares_a_class
from db.errors import DomainError, ErrorCode, Problem, Problems
from db.login_cards.signin import rotate_login_codes
from db.models import ClassKind, ClassMembership, School, SchoolClass, User, UserType
from db.passwords import hash_password_async, hash_passwords, weak_password
from db.schools import require_manual_school
from db.sessions import revoke_sessions
from db.users import (
    ONLY_TEACHERS_ARE_ADMINS,
    PUPILS_HAVE_NO_EMAIL,
    clean_email,
    clean_name,
    clean_username,
    create_user,
    edited,
    email_taken,
    email_taken_problem,
    locked_users,
    mark_edited,
    no_such_user,
    require_an_admin_left,
    save_username,
    username_taken,
)


class SoftDeleted(Protocol):
    """What soft_delete needs to know of each user: who, and whether they are a pupil with login cards."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def type(self) -> UserType: ...


class UserField(enum.StrEnum):
    USERNAME = "USERNAME"
    FIRST_NAME = "FIRST_NAME"
    SURNAME = "SURNAME"
    TYPE = "TYPE"
    IS_ADMIN = "IS_ADMIN"
    EMAIL = "EMAIL"


async def _email_problem(
    session: AsyncSession,
    school_id: uuid.UUID,
    email: str | None,
    type: UserType,
    field: str,
    except_user: uuid.UUID | None = None,
) -> list[Problem]:
    if email is None:
        return []
    if type != UserType.TEACHER:
        return [Problem(ErrorCode.INVALID_INPUT, PUPILS_HAVE_NO_EMAIL, field, except_user)]
    if await email_taken(session, school_id, email, except_user=except_user):
        return [email_taken_problem(email, except_user)]
    return []


def _admin_problem(type: UserType, is_admin: bool, field: str) -> list[Problem]:
    if is_admin and type != UserType.TEACHER:
        return [Problem(ErrorCode.INVALID_INPUT, ONLY_TEACHERS_ARE_ADMINS, field)]
    return []


async def _taken_problem(
    session: AsyncSession, school_id: uuid.UUID, username: str, except_user: uuid.UUID | None = None
) -> list[Problem]:
    if await username_taken(session, school_id, username, except_user=except_user):
        return [
            Problem(
                ErrorCode.USERNAME_TAKEN,
                f"The username '{username}' is already taken.",
                "username",
                except_user,
            )
        ]
    return []


async def add_user(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    username: str,
    password: str,
    type: UserType,
    first_name: str = "",
    surname: str = "",
    is_admin: bool = False,
    must_change_password: bool = False,
    registration_class_id: uuid.UUID | None = None,
    teaching_class_ids: Sequence[uuid.UUID] = (),
    external_id: str | None = None,
    email: str | None = None,
    allow_provider_managed: bool = False,
) -> User:
    school = await _school(session, school_id, allow_provider_managed=allow_provider_managed)
    problems = Problems()
    clean = problems.check(lambda: clean_username(username))
    first = problems.check(lambda: clean_name(first_name, field="firstName"))
    last = problems.check(lambda: clean_name(surname, field="surname"))
    problems.add(
        *weak_password(
            password,
            staff=type == UserType.TEACHER,
            pupil_min_length=school.pupil_min_password_length,
            field="password",
        )
    )
    problems.add(*_admin_problem(type, is_admin, "isAdmin"))
    address = problems.check(lambda: clean_email(email))
    problems.add(*await _email_problem(session, school_id, address, type, "email"))
    if clean is not None:
        problems.add(*await _taken_problem(session, school_id, clean))
    problems.raise_any()
    assert clean is not None and first is not None and last is not None
    user = await create_user(
        session,
        school_id=school_id,
        username=clean,
        password_hash=await hash_password_async(password),
        type=type,
        first_name=first,
        surname=last,
        is_admin=is_admin,
        must_change_password=must_change_password,
        external_id=external_id,
        email=address,
    )
    await place_new_user(
        session,
        school_id=school_id,
        user_id=user.id,
        registration_class_id=registration_class_id,
        teaching_class_ids=teaching_class_ids,
    )
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.USER_CREATED,
        targets=[user.id],
        summary={"username": user.username, "type": type.value, "is_admin": is_admin},
    )
    await session.refresh(user)
    return user


async def _school(session: AsyncSession, school_id: uuid.UUID, *, allow_provider_managed: bool) -> School:
    """The bound school. Its users must be managed here, unless its provider is the one asking
    (`allow_provider_managed`)."""
    return (
        await session.get_one(School, school_id)
        if allow_provider_managed
        else await require_manual_school(session, school_id)
    )


async def lock_roster(session: AsyncSession, school_id: uuid.UUID) -> None:
    """Serialise changes that could leave the school without an admin (one lock per school, always first)."""
    await session.execute(select(School.id).where(School.id == school_id).with_for_update(key_share=True))


async def _locked_targets(
    session: AsyncSession, school_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> list[User]:
    """The users named, once each in the order named (locked in id order); unknown ids (another school's
    too) are reported by id."""
    _, found = await locked_users(session, school_id, user_ids)
    named = list(dict.fromkeys(user_ids))
    missing = [no_such_user(user_id) for user_id in named if user_id not in found]
    if missing:
        raise DomainError(*missing)
    return [found[user_id] for user_id in named]


@dataclass(frozen=True, slots=True)
class Edited:
    """What one edited cell did: the user as now, and the registration class they left (a pupil who became
    a teacher), if any."""

    user: User
    left_class: SchoolClass | None = None


async def update_user_field(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    user_id: uuid.UUID,
    field: UserField,
    value: str,
    expected_version: int,
    allow_provider_managed: bool = False,
    including_deleted: bool = False,
) -> User:
    """Change one cell of the users table (see edit_user_field); the user as now."""
    edited = await edit_user_field(
        session,
        school_id=school_id,
        actor=actor,
        user_id=user_id,
        field=field,
        value=value,
        expected_version=expected_version,
        allow_provider_managed=allow_provider_managed,
        including_deleted=including_deleted,
    )
    return edited.user


async def edit_user_field(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    user_id: uuid.UUID,
    field: UserField,
    value: str,
    expected_version: int,
    allow_provider_managed: bool = False,
    including_deleted: bool = False,
) -> Edited:
    """Change one cell of the users table, unless someone else changed the user since it was read. A deleted
    user is edited only when `including_deleted` (a provider keeps its suspended accounts up to date).

    A pupil made a teacher by hand leaves their registration class (a registration class is a pupil's form);
    a provider, whose groups say where its users are, keeps them in it (`allow_provider_managed`)."""
    await _school(session, school_id, allow_provider_managed=allow_provider_managed)
    if field in (UserField.TYPE, UserField.IS_ADMIN):
        await lock_roster(session, school_id)
    (user,) = await _locked_targets(session, school_id, [user_id])
    if user.version != expected_version:
        raise DomainError(
            Problem(
                ErrorCode.VERSION_CONFLICT,
                "Someone else changed this user since you loaded it; look again and retry.",
                "expectedVersion",
                user_id,
            )
        )
    if user.deleted_at is not None and not including_deleted:
        raise DomainError(
            Problem(ErrorCode.USER_DELETED, "Restore this user before editing them.", None, user_id)
        )
    change = await _field_change(session, user, field, value)
    if change is None:
        return Edited(user)
    column, new = change
    before = getattr(user, column)

    def write() -> None:
        setattr(user, column, new)
        mark_edited(user)

    await save_username(session, user, write)
    left = None
    if column == "type" and new == UserType.TEACHER and not allow_provider_managed:
        left = await _leave_registration_class(session, school_id, user_id)
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.USER_UPDATED,
        targets=[user_id],
        summary={
            "field": field.value,
            "from": _shown(before),
            "to": _shown(new),
            **({"left_class_id": str(left.id), "left_class_name": left.name} if left else {}),
        },
    )
    await session.refresh(user)
    return Edited(user, left)


async def _leave_registration_class(
    session: AsyncSession, school_id: uuid.UUID, user_id: uuid.UUID
) -> SchoolClass | None:
    """Take the user out of their registration class; the class they left, if any."""
    left = (
        await session.execute(
            delete(ClassMembership)
            .where(
                ClassMembership.school_id == school_id,
                ClassMembership.user_id == user_id,
                ClassMembership.kind == ClassKind.REGISTRATION,
            )
            .returning(ClassMembership.class_id)
        )
    ).scalar_one_or_none()
    if left is None:
        return None
    return await session.get_one(SchoolClass, (school_id, left))


async def _field_change(
    session: AsyncSession, user: User, field: UserField, value: str
) -> tuple[str, object] | None:
    """The column and value one edited cell sets, validated as on add; None when nothing changes."""
    match field:
        case UserField.USERNAME:
            username = clean_username(value)
            if username == user.username:
                return None
            if taken := await _taken_problem(session, user.school_id, username, except_user=user.id):
                raise DomainError(*taken)
            return "username", username
        case UserField.FIRST_NAME | UserField.SURNAME:
            column = "first_name" if field == UserField.FIRST_NAME else "surname"
            name = clean_name(value, field="value")
            return None if name == getattr(user, column) else (column, name)
        case UserField.TYPE:
            try:
                new_type = UserType(value)
            except ValueError:
                raise DomainError(
                    Problem(ErrorCode.INVALID_INPUT, "A type is PUPIL or TEACHER, in capitals.", "value")
                ) from None
            if new_type == user.type:
                return None
            if problems := _admin_problem(new_type, user.is_admin, "value"):
                raise DomainError(*problems)
            if new_type == UserType.PUPIL and user.email is not None:
                raise DomainError(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"{PUPILS_HAVE_NO_EMAIL} Remove the email address first.",
                        "value",
                    )
                )
            return "type", new_type
        case UserField.EMAIL:
            email = clean_email(value, field="value")
            if email == user.email:
                return None
            if problems := await _email_problem(session, user.school_id, email, user.type, "value", user.id):
                raise DomainError(*problems)
            return "email", email
        case UserField.IS_ADMIN:
            flag = _parse_flag(value)
            if flag == user.is_admin:
                return None
            if problems := _admin_problem(user.type, flag, "value"):
                raise DomainError(*problems)
            if not flag:
                await require_an_admin_left(session, user.school_id, without={user.id})
            return "is_admin", flag


def _shown(value: object) -> str:
    return "" if value is None else str(value)


def _parse_flag(value: str) -> bool:
    if value in {"true", "false"}:
        return value == "true"
    raise DomainError(
        Problem(ErrorCode.INVALID_INPUT, "IS_ADMIN takes true or false, in lower case.", "value")
    )


async def delete_users(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    user_ids: Sequence[uuid.UUID],
    allow_provider_managed: bool = False,
) -> list[User]:
    """Soft delete: they can no longer sign in and their sessions end now. Deleting again changes nothing.

    A pupil's login codes are rotated too, so a card lost before the deletion does not come back with a
    restore."""
    await _school(session, school_id, allow_provider_managed=allow_provider_managed)
    await lock_roster(session, school_id)
    targets = await _locked_targets(session, school_id, user_ids)
    if actor.id in {user.id for user in targets}:
        raise DomainError(
            Problem(ErrorCode.CANNOT_DELETE_SELF, "You cannot delete yourself.", "userIds", actor.id)
        )
    deleting = [user for user in targets if user.deleted_at is None]
    if any(user.is_admin for user in deleting):
        await require_an_admin_left(session, school_id, without={user.id for user in deleting})
    if deleting:
        ids = [user.id for user in deleting]
        await soft_delete(session, school_id=school_id, actor=actor, users=deleting)
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.USER_DELETED,
            targets=ids,
            summary={"count": len(ids)},
        )
    for user in targets:
        await session.refresh(user)
    return targets


async def soft_delete(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, users: Sequence[SoftDeleted]
) -> None:
    """Mark the users deleted (they can be restored until the retention purge) and end their sessions; a
    pupil's login codes are rotated too, so a card lost before the deletion does not come back with a restore.
    The caller holds lock_roster and writes its own audit event for the deletion."""
    ids = [user.id for user in users]
    await session.execute(
        update(User)
        .where(User.school_id == school_id, User.id.in_(ids))
        .values(deleted_at=func.now(), deleted_by=actor.id, **edited())
    )
    await revoke_sessions(session, school_id=school_id, user_ids=ids)
    # Teachers have no cards.
    if pupils := [user.id for user in users if user.type == UserType.PUPIL]:
        await rotate_login_codes(
            session,
            school_id=school_id,
            user_ids=pupils,
            actor=actor,
        )


async def restore_users(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    user_ids: Sequence[uuid.UUID],
    allow_provider_managed: bool = False,
) -> list[User]:
    """Bring deleted users back, with the classes they had; a username taken meanwhile stops the whole batch."""
    await _school(session, school_id, allow_provider_managed=allow_provider_managed)
    await lock_roster(session, school_id)
    targets = await _locked_targets(session, school_id, user_ids)
    restoring = [user for user in targets if user.deleted_at is not None]
    problems: list[Problem] = []
    claimed: dict[str, uuid.UUID] = {}
    emails: set[str] = set()
    for user in restoring:
        if user.email is not None:
            if user.email.lower() in emails or await email_taken(session, school_id, user.email):
                problems.append(
                    Problem(
                        ErrorCode.EMAIL_TAKEN,
                        f"The email address '{user.email}' was given to another user "
                        "while this user was deleted; change one of them first.",
                        "userIds",
                        user.id,
                    )
                )
            emails.add(user.email.lower())
        key = user.username.lower()
        if key in claimed or await username_taken(session, school_id, user.username):
            problems.append(
                Problem(
                    ErrorCode.USERNAME_TAKEN,
                    f"The username '{user.username}' was taken while this user was deleted; "
                    "rename the other user first.",
                    "userIds",
                    user.id,
                )
            )
        claimed[key] = user.id
    if problems:
        raise DomainError(*problems)
    if restoring:
        ids = [user.id for user in restoring]
        await session.execute(
            update(User)
            .where(User.school_id == school_id, User.id.in_(ids))
            .values(deleted_at=None, deleted_by=None, **edited())
        )
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.USER_RESTORED,
            targets=ids,
            summary={"count": len(ids)},
        )
    for user in targets:
        await session.refresh(user)
    return targets


class ResetForbidden(Exception):
    """A teacher asking to reset passwords they may not: the school does not allow it, or not these users."""


async def require_may_reset(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    viewer_id: uuid.UUID | None,
    sees_every_pupil: bool,
    user_ids: Sequence[uuid.UUID],
) -> None:
    """A viewer who sees every pupil (an admin) may reset anyone's password. A teacher, when the school allows it, only pupils of the classes
    they are in (registration or teaching); any other id in the batch refuses the whole batch."""
    if sees_every_pupil:
        return
    allowed = (
        await session.execute(select(School.teachers_can_reset_pupil_passwords).where(School.id == school_id))
    ).scalar_one()
    if not allowed or viewer_id is None:
        raise ResetForbidden("Only a school admin can reset passwords in this school.")
    ids = set(user_ids)
    mine = (
        await session.execute(
            select(func.count())
            .select_from(User)
            .where(
                User.school_id == school_id,
                User.id.in_(ids),
                User.type == UserType.PUPIL,
                shares_a_class(school_id, viewer_id),
            )
        )
    ).scalar_one()
    if mine != len(ids):
        raise ResetForbidden("You can reset the passwords only of the pupils in the classes you are in.")


async def reset_passwords(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    keep_session: uuid.UUID | None,
    user_ids: Sequence[uuid.UUID],
    new_password: str,
    confirm_password: str,
    must_change_password: bool,
    sees_every_pupil: bool,
) -> list[User]:
    """Give the users one new password (the caller has re-authenticated); their other sessions end."""
    school = await require_manual_school(session, school_id)
    await require_may_reset(
        session, school_id=school_id, viewer_id=actor.id, sees_every_pupil=sees_every_pupil, user_ids=user_ids
    )
    if new_password != confirm_password:
        raise DomainError(
            Problem(
                ErrorCode.PASSWORDS_DO_NOT_MATCH, "The two new passwords are not the same.", "confirmPassword"
            )
        )
    targets = await _locked_targets(session, school_id, user_ids)
    problems = Problems()
    for user in targets:
        if user.deleted_at is not None:
            problems.add(
                Problem(
                    ErrorCode.USER_DELETED,
                    f"{user.username} is deleted; restore them first.",
                    "userIds",
                    user.id,
                )
            )
    # One password, so one problem with it however many users share it: its problem for staff, for pupils,
    # or both when they differ and both are chosen; naming the user when it is one user's.
    weak: dict[str, Problem] = {}
    for staff in (False, True):
        kind = [user for user in targets if (user.type == UserType.TEACHER) == staff]
        if not kind:
            continue
        for problem in weak_password(
            new_password, staff=staff, pupil_min_length=school.pupil_min_password_length, field="newPassword"
        ):
            one = kind[0].id if len(kind) == 1 else None
            weak.setdefault(problem.message, dataclasses.replace(problem, user_id=one))
    problems.add(*weak.values())
    problems.raise_any()
    # One salt (and hash) per user, computed in parallel threads.
    hashes = await hash_passwords([new_password] * len(targets))
    for user, password_hash in zip(targets, hashes, strict=True):
        user.password_hash = password_hash
        user.must_change_password = must_change_password
        mark_edited(user)
    await session.flush()
    ids = [user.id for user in targets]
    await revoke_sessions(session, school_id=school_id, user_ids=ids, keep=keep_session)
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.USER_PASSWORD_RESET,
        targets=ids,
        summary={"count": len(ids), "must_change_password": must_change_password},
    )
    for user in targets:
        await session.refresh(user)
    return targets
