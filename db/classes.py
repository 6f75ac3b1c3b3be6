"""Classes: each user is in at most one registration class and any number of teaching classes.

Every change runs in the caller's transaction and raises DomainError with every problem it finds, so a batch
applies whole or changes nothing. Memberships change only under row locks on the users concerned, taken in
id order, so two admins moving the same pupils at once queue one behind the other instead of colliding.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from sqlalchemy import ColumnElement, Exists, delete, exists, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import AliasedClass

from db import audit
from db.audit import Actor, AuditAction
from db.errors import DomainError, ErrorCode, Problem, Problems, on_collision, require_batch_size, unique_or
from db.models import ClassKind, ClassMembership, SchoolClass, User
from db.names import CLASS_NAME_MAX, class_name_key
from db.schools import require_manual_school
from db.users import clean_name

T = TypeVar("T")

RETRY_ATTEMPTS = 5
NAME_INDEX = "uq_classes_school_id_kind_name_key"
# A collision with a concurrent transaction, not a mistake in the request: running it again succeeds.
SERIALIZATION_FAILURE, DEADLOCK_DETECTED, UNIQUE_VIOLATION = "40001", "40P01", "23505"
MEMBERSHIP_KEYS = ("uq_class_memberships_one_registration_class", "pk_class_memberships")


class RowLock(TypedDict, total=False):
    read: bool
    key_share: bool


# Row locks on a class. Members change under a shared lock (the class must not vanish meanwhile); a rename
# leaves that lock free, since it changes no key; a delete waits for every other lock.
MEMBERS_CHANGING: RowLock = {"read": True, "key_share": True}  # FOR KEY SHARE
RENAMING: RowLock = {"key_share": True}  # FOR NO KEY UPDATE
DELETING: RowLock = {}  # FOR UPDATE


async def classes_of_users(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    among: ColumnElement[bool] | None = None,
) -> dict[uuid.UUID, list[SchoolClass]]:
    """Every class of each user (every one that meets `among`, if given), in one statement, ordered by kind
    then name."""
    rows = await session.execute(
        select(ClassMembership.user_id, SchoolClass)
        .join(
            SchoolClass,
            (SchoolClass.school_id == ClassMembership.school_id)
            & (SchoolClass.id == ClassMembership.class_id),
        )
        .where(
            ClassMembership.school_id == school_id,
            ClassMembership.user_id.in_(user_ids),
            *(() if among is None else (among,)),
        )
        .order_by(SchoolClass.kind, SchoolClass.name, SchoolClass.id)
    )
    found: dict[uuid.UUID, list[SchoolClass]] = defaultdict(list)
    for user_id, school_class in rows:
        found[user_id].append(school_class)
    return found


def class_order(
    classes: type[SchoolClass] | AliasedClass[SchoolClass],
) -> list[ColumnElement[Any]]:
    """The class list's order: registration classes first, then by name whatever its case (gql.compiled_sql
    renders it into the compiled read path's statement too)."""
    return [classes.kind.expression, func.lower(classes.name), classes.id.expression]


def shares_a_class(school_id: uuid.UUID, viewer_id: uuid.UUID) -> Exists:
    """The user is in a class the viewer is in too (registration or teaching): a teacher's own pupils."""
    mine, theirs = aliased(ClassMembership), aliased(ClassMembership)
    return exists().where(
        mine.school_id == school_id,
        mine.user_id == viewer_id,
        theirs.school_id == school_id,
        theirs.class_id == mine.class_id,
        theirs.user_id == User.id,
    )


async def list_classes(
    session: AsyncSession, *, school_id: uuid.UUID, kind: ClassKind | None = None
) -> list[SchoolClass]:
    """The school's classes, registration classes first, then by name."""
    query = select(SchoolClass).where(SchoolClass.school_id == school_id)
    if kind is not None:
        query = query.where(SchoolClass.kind == kind)
    return list((await session.execute(query.order_by(*class_order(SchoolClass)))).scalars())


async def get_class(
    session: AsyncSession, *, school_id: uuid.UUID, class_id: uuid.UUID, lock: RowLock | None = None
) -> SchoolClass | None:
    """One class, locked with one of the row locks above if `lock` is given."""
    query = select(SchoolClass).where(SchoolClass.school_id == school_id, SchoolClass.id == class_id)
    if lock is not None:
        query = query.with_for_update(**lock)
    return (await session.execute(query)).scalar_one_or_none()


async def member_counts(
    session: AsyncSession, *, school_id: uuid.UUID, class_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """How many users (deleted ones aside, as in a roster) each class has, in one statement."""
    rows = await session.execute(
        select(ClassMembership.class_id, func.count())
        .join(User, (User.school_id == ClassMembership.school_id) & (User.id == ClassMembership.user_id))
        .where(
            ClassMembership.school_id == school_id,
            ClassMembership.class_id.in_(class_ids),
            User.deleted_at.is_(None),
        )
        .group_by(ClassMembership.class_id)
    )
    return {class_id: count for class_id, count in rows}


def clean_class_name(raw: str) -> str:
    name = clean_name(raw, field="name", what="The class's name", most=CLASS_NAME_MAX)
    if not name:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, f"A class's name is 1 to {CLASS_NAME_MAX} characters.", "name")
        )
    return name


def _kind_word(kind: ClassKind) -> str:
    return "registration" if kind == ClassKind.REGISTRATION else "teaching"


def _class_not_found(class_id: uuid.UUID, field: str = "classId") -> Problem:
    return Problem(ErrorCode.NOT_FOUND, f"No class has the id {class_id}.", field)


def _wrong_kind(school_class: SchoolClass, kind: ClassKind) -> str:
    actual, wanted = _kind_word(school_class.kind), _kind_word(kind)
    return f"'{school_class.name}' is a {actual} class, not a {wanted} class."


def _name_taken(kind: ClassKind, name: str) -> DomainError:
    return DomainError(
        Problem(
            ErrorCode.CLASS_NAME_TAKEN,
            f"There is already a {_kind_word(kind)} class called '{name}'.",
            "name",
        )
    )


async def _name_free(
    session: AsyncSession,
    school_id: uuid.UUID,
    kind: ClassKind,
    name: str,
    *,
    except_class: uuid.UUID | None = None,
) -> None:
    query = select(SchoolClass.id).where(
        SchoolClass.school_id == school_id,
        SchoolClass.kind == kind,
        SchoolClass.name_key == class_name_key(name),
    )
    if except_class is not None:
        query = query.where(SchoolClass.id != except_class)
    if (await session.execute(query.limit(1))).first() is not None:
        raise _name_taken(kind, name)


def _unique_name(session: AsyncSession, kind: ClassKind, name: str) -> AbstractAsyncContextManager[None]:
    """Write a class's name in a savepoint; when two admins choose one name at once, the index decides."""
    return unique_or(session, {NAME_INDEX: lambda: _name_taken(kind, name)})


async def _require_classes_here(
    session: AsyncSession, school_id: uuid.UUID, allow_provider_managed: bool
) -> None:
    """A managed school's classes come from its provider: only the provider (`allow_provider_managed`)
    changes them."""
    if not allow_provider_managed:
        await require_manual_school(session, school_id)


async def create_class(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    name: str,
    kind: ClassKind,
    allow_provider_managed: bool = False,
) -> SchoolClass:
    await _require_classes_here(session, school_id, allow_provider_managed)
    name = clean_class_name(name)
    await _name_free(session, school_id, kind, name)
    school_class = SchoolClass(school_id=school_id, id=uuid.uuid4(), name=name, kind=kind)
    async with _unique_name(session, kind, name):
        session.add(school_class)
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.CLASS_CREATED,
        summary={"class_id": str(school_class.id), "name": name, "kind": kind.value},
    )
    return school_class


async def rename_class(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    class_id: uuid.UUID,
    name: str,
    allow_provider_managed: bool = False,
) -> SchoolClass:
    await _require_classes_here(session, school_id, allow_provider_managed)
    problems = Problems()
    new_name = problems.check(lambda: clean_class_name(name))
    school_class = await get_class(session, school_id=school_id, class_id=class_id, lock=RENAMING)
    if school_class is None:
        problems.add(_class_not_found(class_id))
    problems.raise_any()
    assert school_class is not None and new_name is not None
    old_name = school_class.name
    if new_name == old_name:
        return school_class
    await _name_free(session, school_id, school_class.kind, new_name, except_class=class_id)
    async with _unique_name(session, school_class.kind, new_name):
        school_class.name = new_name
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.CLASS_RENAMED,
        summary={
            "class_id": str(class_id),
            "kind": school_class.kind.value,
            "from": old_name,
            "to": new_name,
        },
    )
    return school_class


async def delete_class(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    class_id: uuid.UUID,
    allow_provider_managed: bool = False,
) -> SchoolClass:
    """Delete a class: its memberships end, its users stay. Returns the class as it was."""
    await _require_classes_here(session, school_id, allow_provider_managed)
    school_class = await get_class(session, school_id=school_id, class_id=class_id, lock=DELETING)
    if school_class is None:
        raise DomainError(_class_not_found(class_id))
    members = sorted(
        (
            await session.execute(
                delete(ClassMembership)
                .where(ClassMembership.school_id == school_id, ClassMembership.class_id == class_id)
                .returning(ClassMembership.user_id)
            )
        ).scalars()
    )
    await session.execute(
        delete(SchoolClass).where(SchoolClass.school_id == school_id, SchoolClass.id == class_id)
    )
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.CLASS_DELETED,
        targets=members,
        summary=_summary(school_class),
    )
    return school_class


async def change_class_kind(
    session: AsyncSession,
    *,
    actor: Actor,
    school_class: SchoolClass,
    kind: ClassKind,
    allow_provider_managed: bool = False,
) -> None:
    """Make a class (held with the DELETING lock) the other kind. Its memberships follow the kind through
    their foreign key: a teaching class becoming a registration class moves its members out of their
    registration classes, and the `class.kind_changed` audit event says where each one was."""
    await _require_classes_here(session, school_class.school_id, allow_provider_managed)
    school_id, class_id = school_class.school_id, school_class.id
    await _name_free(session, school_id, kind, school_class.name)
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
    before, name = school_class.kind, school_class.name
    school_class.kind = kind
    with on_collision({NAME_INDEX: lambda: _name_taken(kind, name)}):
        await session.flush()
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.CLASS_KIND_CHANGED,
        targets=[uuid.UUID(user_id) for user_id in sorted(moved)],
        summary={
            "class_id": str(class_id),
            "name": name,
            "from": before.value,
            "to": kind.value,
            "previous_class_ids": moved,
        },
    )


async def _locked_class_and_users(
    session: AsyncSession,
    school_id: uuid.UUID,
    class_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    *,
    allow_provider_managed: bool = False,
    including_deleted: bool = False,
) -> tuple[SchoolClass, list[uuid.UUID]]:
    """The class and the (distinct) users, locked; every unknown id (and deleted user, unless
    `including_deleted`) is reported."""
    await _require_classes_here(session, school_id, allow_provider_managed)
    ids = list(dict.fromkeys(user_ids))
    require_batch_size(len(ids))
    school_class = await get_class(session, school_id=school_id, class_id=class_id, lock=MEMBERS_CHANGING)
    # In id order, so concurrent changes to overlapping sets of users cannot deadlock.
    users = {
        row.id: row
        for row in await session.execute(
            select(User.id, User.username, User.deleted_at)
            .where(User.school_id == school_id, User.id.in_(ids))
            .order_by(User.id)
            .with_for_update(key_share=True)
        )
    }
    problems = Problems()
    if school_class is None:
        problems.add(_class_not_found(class_id))
    for user_id in ids:
        user = users.get(user_id)
        if user is None:
            problems.add(Problem(ErrorCode.NOT_FOUND, f"No user has the id {user_id}.", "userIds", user_id))
        elif user.deleted_at is not None and not including_deleted:
            problems.add(
                Problem(
                    ErrorCode.USER_DELETED,
                    f"'{user.username}' is deleted; restore them first.",
                    "userIds",
                    user_id,
                )
            )
    problems.raise_any()
    assert school_class is not None
    return school_class, ids


def _memberships(school_class: SchoolClass, user_ids: Sequence[uuid.UUID]) -> list[dict[str, object]]:
    return [
        {
            "school_id": school_class.school_id,
            "class_id": school_class.id,
            "user_id": user_id,
            "kind": school_class.kind,
        }
        for user_id in user_ids
    ]


def _summary(school_class: SchoolClass) -> dict[str, object]:
    return {"class_id": str(school_class.id), "name": school_class.name, "kind": school_class.kind.value}


@dataclass(frozen=True, slots=True)
class Assigned:
    """What `assign_users` did: the class, the users named (in the order given, once each) and the
    registration classes the users moved out of."""

    school_class: SchoolClass
    user_ids: list[uuid.UUID]
    left_class_ids: list[uuid.UUID]


async def assign_to_class(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    class_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    allow_provider_managed: bool = False,
    including_deleted: bool = False,
) -> SchoolClass:
    """Put users in a class (see assign_users); the class."""
    assigned = await assign_users(
        session,
        school_id=school_id,
        actor=actor,
        class_id=class_id,
        user_ids=user_ids,
        allow_provider_managed=allow_provider_managed,
        including_deleted=including_deleted,
    )
    return assigned.school_class


async def assign_users(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    class_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    allow_provider_managed: bool = False,
    including_deleted: bool = False,
) -> Assigned:
    """Put users in a class. A registration class MOVES each user out of their previous one; a teaching class
    adds. Users already in the class are left as they are; those whose classes change are edited (their
    version and updated time move on)."""
    school_class, ids = await _locked_class_and_users(
        session,
        school_id,
        class_id,
        user_ids,
        allow_provider_managed=allow_provider_managed,
        including_deleted=including_deleted,
    )
    if school_class.kind == ClassKind.REGISTRATION:
        left = await _move_into(session, actor, school_class, ids)
    else:
        left = []
        await _add_to(session, actor, school_class, ids)
    return Assigned(school_class=school_class, user_ids=ids, left_class_ids=left)


async def _members_changed(
    session: AsyncSession, school_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> None:
    """A user's classes are part of the row the users table shows: a change to them is an edit of the user."""
    await session.execute(
        update(User)
        .where(User.school_id == school_id, User.id.in_(user_ids))
        .values(version=User.version + 1, updated_at=func.now())
    )


async def _move_into(
    session: AsyncSession, actor: Actor, school_class: SchoolClass, user_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """Move the users into the registration class; the classes they left, in the order first left."""
    school_id = school_class.school_id
    previous = {
        user_id: class_id
        for user_id, class_id in await session.execute(
            select(ClassMembership.user_id, ClassMembership.class_id).where(
                ClassMembership.school_id == school_id,
                ClassMembership.kind == ClassKind.REGISTRATION,
                ClassMembership.user_id.in_(user_ids),
            )
        )
    }
    moving = [user_id for user_id in user_ids if previous.get(user_id) != school_class.id]
    if not moving:
        return []
    await session.execute(
        delete(ClassMembership).where(
            ClassMembership.school_id == school_id,
            ClassMembership.kind == ClassKind.REGISTRATION,
            ClassMembership.user_id.in_(moving),
        )
    )
    await session.execute(insert(ClassMembership), _memberships(school_class, moving))
    await _members_changed(session, school_id, moving)
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.CLASS_MEMBERS_MOVED,
        targets=sorted(moving),
        summary={
            **_summary(school_class),
            "previous_class_ids": {
                str(user_id): str(previous[user_id]) for user_id in moving if user_id in previous
            },
        },
    )
    return list(dict.fromkeys(previous[user_id] for user_id in moving if user_id in previous))


async def _add_to(
    session: AsyncSession, actor: Actor, school_class: SchoolClass, user_ids: Sequence[uuid.UUID]
) -> None:
    school_id = school_class.school_id
    members = set(
        (
            await session.execute(
                select(ClassMembership.user_id).where(
                    ClassMembership.school_id == school_id,
                    ClassMembership.class_id == school_class.id,
                    ClassMembership.user_id.in_(user_ids),
                )
            )
        ).scalars()
    )
    adding = [user_id for user_id in user_ids if user_id not in members]
    if not adding:
        return
    await session.execute(insert(ClassMembership), _memberships(school_class, adding))
    await _members_changed(session, school_id, adding)
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.CLASS_MEMBERS_ADDED,
        targets=sorted(adding),
        summary=_summary(school_class),
    )


async def remove_from_class(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    class_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    allow_provider_managed: bool = False,
    including_deleted: bool = False,
) -> SchoolClass:
    """Take users out of a class (see remove_users); the class."""
    removed = await remove_users(
        session,
        school_id=school_id,
        actor=actor,
        class_id=class_id,
        user_ids=user_ids,
        allow_provider_managed=allow_provider_managed,
        including_deleted=including_deleted,
    )
    return removed.school_class


async def classes_by_id(
    session: AsyncSession, *, school_id: uuid.UUID, class_ids: Sequence[uuid.UUID]
) -> list[SchoolClass]:
    """The classes of these ids, in the order given; ids of no class of the school are left out."""
    rows = await session.execute(
        select(SchoolClass).where(SchoolClass.school_id == school_id, SchoolClass.id.in_(class_ids))
    )
    found = {row.id: row for row in rows.scalars()}
    return [found[class_id] for class_id in class_ids if class_id in found]


async def remove_users(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    class_id: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
    allow_provider_managed: bool = False,
    including_deleted: bool = False,
) -> Assigned:
    """Take users out of a class; users who are not in it are left as they are, those taken out are edited."""
    school_class, ids = await _locked_class_and_users(
        session,
        school_id,
        class_id,
        user_ids,
        allow_provider_managed=allow_provider_managed,
        including_deleted=including_deleted,
    )
    removed = sorted(
        (
            await session.execute(
                delete(ClassMembership)
                .where(
                    ClassMembership.school_id == school_id,
                    ClassMembership.class_id == class_id,
                    ClassMembership.user_id.in_(ids),
                )
                .returning(ClassMembership.user_id)
            )
        ).scalars()
    )
    if removed:
        await _members_changed(session, school_id, removed)
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.CLASS_MEMBERS_REMOVED,
            targets=removed,
            summary=_summary(school_class),
        )
    return Assigned(school_class=school_class, user_ids=ids, left_class_ids=[])


async def place_new_user(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_id: uuid.UUID,
    registration_class_id: uuid.UUID | None,
    teaching_class_ids: Sequence[uuid.UUID],
) -> None:
    """Put a user being added into their classes; every unknown class and every class of the wrong kind is
    reported against its field. The caller's audit event for the new user names the classes."""
    teaching = list(dict.fromkeys(teaching_class_ids))
    require_batch_size(len(teaching), field="teachingClassIds", things="classes")
    wanted = [*([registration_class_id] if registration_class_id else []), *teaching]
    if not wanted:
        return
    found = {
        row.id: row
        for row in (
            await session.execute(
                select(SchoolClass)
                .where(SchoolClass.school_id == school_id, SchoolClass.id.in_(wanted))
                .with_for_update(**MEMBERS_CHANGING)
            )
        ).scalars()
    }
    expected = [(class_id, ClassKind.TEACHING, "teachingClassIds") for class_id in teaching]
    if registration_class_id:
        expected.insert(0, (registration_class_id, ClassKind.REGISTRATION, "registrationClassId"))
    problems = Problems()
    for class_id, kind, field in expected:
        school_class = found.get(class_id)
        if school_class is None:
            problems.add(_class_not_found(class_id, field))
        elif school_class.kind != kind:
            problems.add(Problem(ErrorCode.INVALID_INPUT, _wrong_kind(school_class, kind), field))
    problems.raise_any()
    await session.execute(
        insert(ClassMembership),
        [
            {"school_id": school_id, "class_id": class_id, "user_id": user_id, "kind": found[class_id].kind}
            for class_id in wanted
        ],
    )


def _collided(error: DBAPIError) -> bool:
    state = getattr(error.orig, "sqlstate", None)
    if state in (SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
        return True
    return state == UNIQUE_VIOLATION and any(key in str(error.orig) for key in MEMBERSHIP_KEYS)


async def with_retries(
    transaction: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    change: Callable[[AsyncSession], Awaitable[T]],
    *,
    attempts: int = RETRY_ATTEMPTS,
) -> T:
    """Run `change` in a fresh transaction, and again from the start when it collides with a concurrent one
    (a deadlock, a serialization failure, or the one-registration-class index); a collision that outlasts
    every attempt is a CONCURRENT_CHANGE problem, never an internal error."""
    for attempt in range(1, attempts + 1):
        try:
            async with transaction() as session:
                return await change(session)
        except DBAPIError as error:
            if not _collided(error):
                raise
        if attempt < attempts:
            # Back off a random, growing while, so the colliding transactions do not meet again.
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise DomainError(
        Problem(
            ErrorCode.CONCURRENT_CHANGE, "Someone else changed these classes at the same moment; try again."
        )
    )
