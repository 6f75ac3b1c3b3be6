"""Bulk upload: preview a roster file as an import job, then apply it, whole, once it is confirmed.

The apply runs in ONE transaction. The passwords are hashed before it opens (the slow part: seconds for
a big file), against a draft plan of the roster as it is then; the transaction plans again under the roster's
lock, uses the hashes that still fit and hashes only what the roster's changes in between call for. So the
transaction holds its connection and the lock for the writes alone, and never waits for a second connection
while it holds one (behind a pooler with few server connections, that wait could be forever). Progress
(`processed` of `total`) is written from separate short transactions while hashing, so another connection
can draw a progress bar.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem
from db.imports.plan import ExistingUser, ImportAction, Plan, PlannedRow, Roster, plan_import
from db.imports.roster_csv import CsvError, ExportRow, RosterRow, RowProblem, decode_upload, parse_roster
from db.imports.sealed_passwords import SealBroken, seal, unseal
from db.maintenance import STALE_IMPORT, fail_stale_imports_of
from db.manage_users import lock_roster, soft_delete
from db.models import ClassKind, ClassMembership, ImportJob, ImportStatus, School, SchoolClass, User, UserType
from db.names import class_name_key
from db.passwords import hash_in_bulk, memorable_password
from db.schools import require_manual_school
from db.scope import school_scope
from db.users import edited

log = logging.getLogger("rollcall.imports")
PROGRESS_EVERY = 64
Progress = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RemovedPupil:
    id: uuid.UUID
    type: UserType = UserType.PUPIL


@dataclass(frozen=True, slots=True)
class GeneratedPassword:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Applied:
    job: ImportJob
    generated_passwords: list[GeneratedPassword]


async def _classes_by_user(
    session: AsyncSession, school_id: uuid.UUID
) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, list[str]]]:
    """Each user's registration class name and teaching class names."""
    kinds = {
        class_id: (kind, name)
        for class_id, kind, name in await session.execute(
            select(SchoolClass.id, SchoolClass.kind, SchoolClass.name).where(
                SchoolClass.school_id == school_id
            )
        )
    }
    registration: dict[uuid.UUID, str] = {}
    teaching: dict[uuid.UUID, list[str]] = defaultdict(list)
    for user_id, class_id in await session.execute(
        select(ClassMembership.user_id, ClassMembership.class_id).where(
            ClassMembership.school_id == school_id
        )
    ):
        kind, name = kinds[class_id]
        if kind == ClassKind.REGISTRATION:
            registration[user_id] = name
        else:
            teaching[user_id].append(name)
    return registration, teaching


async def _active_users(session: AsyncSession, school_id: uuid.UUID) -> Sequence[User]:
    return (
        (
            await session.execute(
                select(User)
                .where(User.school_id == school_id, User.deleted_at.is_(None))
                .order_by(func.lower(User.username))
            )
        )
        .scalars()
        .all()
    )


async def load_roster(session: AsyncSession, school_id: uuid.UUID) -> Roster:
    """The school's active users with their classes, and every class."""
    school = await session.get_one(School, school_id)
    registration, teaching = await _classes_by_user(session, school_id)
    users = {
        user.username.lower(): ExistingUser(
            id=user.id,
            username=user.username,
            first_name=user.first_name,
            surname=user.surname,
            type=user.type,
            is_admin=user.is_admin,
            registration_class=registration.get(user.id),
            teaching_classes=frozenset(class_name_key(name) for name in teaching.get(user.id, ())),
            email=user.email,
        )
        for user in await _active_users(session, school_id)
    }
    classes = await session.execute(
        select(SchoolClass.kind, SchoolClass.name).where(SchoolClass.school_id == school_id)
    )
    return Roster(
        users=users,
        classes={(kind, class_name_key(name)): name for kind, name in classes},
        pupil_min_password_length=school.pupil_min_password_length,
    )


async def export_rows(session: AsyncSession, *, school_id: uuid.UUID) -> list[ExportRow]:
    """The school's active users in the import format (the template is the export)."""
    registration, teaching = await _classes_by_user(session, school_id)
    return [
        ExportRow(
            username=u.username,
            first_name=u.first_name,
            surname=u.surname,
            type=u.type,
            registration_class=registration.get(u.id),
            teaching_classes=teaching.get(u.id, []),
            is_admin=u.is_admin,
            email=u.email,
        )
        for u in await _active_users(session, school_id)
    ]


def _source(row: RosterRow) -> dict[str, Any]:
    return {
        "row": row.row_number,
        "username": row.username,
        "first_name": row.first_name,
        "surname": row.surname,
        "type": row.type.value if row.type else None,
        "is_admin": row.is_admin,
        "registration_class": row.registration_class,
        "teaching_classes": list(row.teaching_classes),
        "problems": [[p.column, p.message] for p in row.problems],
        "email": row.email,
    }


def _row_from_source(source: dict[str, Any], password: str | None) -> RosterRow:
    return RosterRow(
        row_number=source["row"],
        username=source["username"],
        first_name=source["first_name"],
        surname=source["surname"],
        type=UserType(source["type"]) if source["type"] else None,
        is_admin=source["is_admin"],
        registration_class=source["registration_class"],
        teaching_classes=tuple(source["teaching_classes"]),
        password=password,
        problems=tuple(RowProblem(source["row"], column, message) for column, message in source["problems"]),
        email=source.get("email"),
    )


def _shown(row: PlannedRow) -> dict[str, Any]:
    return {
        "row": row.row_number,
        "username": row.username,
        "action": row.action.value,
        "user_id": str(row.user_id) if row.user_id else None,
        "changes": [[name, old, new] for name, (old, new) in row.changes.items()],
        "errors": [[p.column, p.message] for p in row.errors],
    }


async def preview_import(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    file_name: str,
    data: bytes,
    remove_missing_pupils: bool,
    max_bytes: int,
    max_rows: int,
    server_secret: bytes,
) -> ImportJob:
    """Read and check the whole file and store what it would do; the roster itself does not change.

    The typed passwords are kept sealed with a key derived from `server_secret`, and only when the preview
    can be confirmed: a file with errors is uploaded again, so its passwords are not kept at all."""
    await require_manual_school(session, school_id)
    roster = await load_roster(session, school_id)
    try:
        parsed = parse_roster(decode_upload(data, max_bytes=max_bytes), max_rows=max_rows)
    except CsvError as error:
        raise DomainError(Problem(ErrorCode.INVALID_FILE, error.message, "file")) from None
    plan = plan_import(parsed.rows, parsed.columns, roster, remove_missing_pupils=remove_missing_pupils)
    shown = {row.row_number: _shown(row) for row in plan.rows if row.row_number is not None}
    job_id = uuid.uuid4()
    passwords = {str(row.row_number): row.password for row in parsed.rows if row.password is not None}
    job = ImportJob(
        school_id=school_id,
        id=job_id,
        created_by=actor.id,
        file_name=file_name[:255],
        status=ImportStatus.PREVIEW,
        remove_missing_pupils=remove_missing_pupils,
        total=len(plan.rows),
        processed=0,
        totals=plan.totals(),
        columns=sorted(parsed.columns),
        rows=[{**shown.get(row.row_number, {}), "source": _source(row)} for row in parsed.rows]
        + [_shown(row) for row in plan.rows if row.row_number is None],
        new_classes=[{"kind": kind.value, "name": name} for kind, name in plan.new_classes],
        warnings=list(parsed.warnings),
        sealed_passwords=seal(passwords, server_secret=server_secret, school_id=school_id, job_id=job_id)
        if passwords and not plan.has_errors
        else None,
    )
    session.add(job)
    await session.flush()
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.IMPORT_PREVIEWED,
        summary={"job_id": str(job.id), "file_name": job.file_name, **plan.totals()},
    )
    await session.refresh(job)
    return job


async def get_job(session: AsyncSession, *, school_id: uuid.UUID, job_id: uuid.UUID) -> ImportJob | None:
    """The job; one left RUNNING by a worker that died is failed as it is read."""
    await fail_stale_imports_of(session, school_id, older_than=STALE_IMPORT)
    return (
        await session.execute(
            select(ImportJob).where(ImportJob.school_id == school_id, ImportJob.id == job_id)
        )
    ).scalar_one_or_none()


def _refuse(message: str) -> DomainError:
    return DomainError(Problem(ErrorCode.IMPORT_NOT_CONFIRMABLE, message, "jobId"))


async def _start(
    db: Database, school_id: uuid.UUID, job_id: uuid.UUID, server_secret: bytes
) -> tuple[list[RosterRow], frozenset[str], bool, int]:
    """Move the job from PREVIEW to RUNNING (once only) and take what the apply needs."""
    async with school_scope(db, school_id) as session:
        job = (
            await session.execute(
                select(ImportJob)
                .where(ImportJob.school_id == school_id, ImportJob.id == job_id)
                .with_for_update()
            )
        ).scalar_one_or_none()
        if job is None:
            raise DomainError(Problem(ErrorCode.NOT_FOUND, f"No import job has the id {job_id}.", "jobId"))
        if job.status != ImportStatus.PREVIEW:
            raise _refuse(f"This import is {job.status.value.lower()}; an import is applied at most once.")
        if job.totals.get(ImportAction.ERROR.value):
            raise _refuse("Fix the rows with errors in your file and upload it again.")
        if (await session.execute(select(func.now()))).scalar_one() >= job.expires_at:
            raise _refuse("This preview is more than a day old; upload the file again.")
        try:
            passwords = (
                unseal(job.sealed_passwords, server_secret=server_secret, school_id=school_id, job_id=job_id)
                if job.sealed_passwords is not None
                else {}
            )
        except SealBroken:
            raise _refuse(
                "The passwords in this preview can no longer be read (the server's secret key "
                "changed); upload the file again."
            ) from None
        rows = [
            _row_from_source(entry["source"], passwords.get(str(entry["source"]["row"])))
            for entry in job.rows
            if "source" in entry
        ]
        # The typed passwords leave the database here; the apply holds them in memory only.
        job.status, job.sealed_passwords, job.updated_at = ImportStatus.RUNNING, None, func.now()
        return rows, frozenset(job.columns), job.remove_missing_pupils, job.total


async def confirm_import(
    db: Database, *, school_id: uuid.UUID, actor: Actor, job_id: uuid.UUID, server_secret: bytes
) -> Applied:
    """Apply a previewed job (the caller has re-authenticated): all of it in one transaction, or none of it."""
    rows, columns, remove_missing, total = await _start(db, school_id, job_id, server_secret)

    async def progress(done: int) -> None:
        async with school_scope(db, school_id) as session:
            await session.execute(
                update(ImportJob)
                .where(ImportJob.school_id == school_id, ImportJob.id == job_id)
                .values(processed=done, updated_at=func.now())
            )

    try:
        async with school_scope(db, school_id) as session:
            await require_manual_school(session, school_id)
            draft = plan_import(
                rows, columns, await load_roster(session, school_id), remove_missing_pupils=remove_missing
            )
        hashed = await _hash_all(_passwords_wanted(draft), progress) if not draft.has_errors else _Hashed()
        async with school_scope(db, school_id, actor) as session:
            await require_manual_school(session, school_id)
            await lock_roster(session, school_id)
            roster = await load_roster(session, school_id)
            plan = plan_import(rows, columns, roster, remove_missing_pupils=remove_missing)
            if plan.has_errors:
                raise DomainError(
                    Problem(
                        ErrorCode.IMPORT_NOT_CONFIRMABLE,
                        "The roster changed since the preview and the file no longer applies; "
                        "download the roster again and upload a fresh file.",
                        "jobId",
                    )
                )
            # What the roster's changes since the draft call for, if anything, is hashed here, without progress:
            # a progress write would wait for a second connection while this transaction holds one.
            hashed = await _hash_all(_passwords_wanted(plan), _no_progress, hashed)
            generated = await _apply(session, school_id, actor, plan, roster, hashed)
            job = (
                await session.execute(
                    update(ImportJob)
                    .where(ImportJob.school_id == school_id, ImportJob.id == job_id)
                    .values(
                        status=ImportStatus.SUCCEEDED,
                        processed=total,
                        sealed_passwords=None,
                        totals=plan.totals(),
                        updated_at=func.now(),
                    )
                    .returning(ImportJob)
                )
            ).scalar_one()
    except DomainError as error:
        await _fail(db, school_id, job_id, error.problems[0].message)
        raise
    except Exception:
        log.exception("import %s failed", job_id)
        reason = "The import failed and nothing was changed; try again, or ask for help if it keeps failing."
        await _fail(db, school_id, job_id, reason)
        raise DomainError(Problem(ErrorCode.IMPORT_FAILED, reason, "jobId")) from None
    return Applied(job=job, generated_passwords=generated)


async def _fail(db: Database, school_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> None:
    """Record the failure; if the database is gone too, the job is failed when it is next read or at start-up."""
    try:
        async with school_scope(db, school_id) as session:
            await session.execute(
                update(ImportJob)
                .where(ImportJob.school_id == school_id, ImportJob.id == job_id)
                .values(
                    status=ImportStatus.FAILED,
                    failure_reason=reason,
                    sealed_passwords=None,
                    updated_at=func.now(),
                )
            )
    except (SQLAlchemyError, OSError):
        log.warning("could not mark import %s FAILED", job_id, exc_info=True)


@dataclass(frozen=True, slots=True)
class _Password:
    """A password a row of the plan needs hashed: the one typed into the file, or else (None) a generated one."""

    row_number: int
    username: str
    typed: str | None


@dataclass(frozen=True, slots=True)
class _Hashed:
    hashes: dict[int, str] = field(default_factory=dict)  # by row number
    generated: dict[int, GeneratedPassword] = field(
        default_factory=dict
    )  # by row number, in the plan's order


def _passwords_wanted(plan: Plan) -> list[_Password]:
    wanted: list[_Password] = []
    for row in plan.rows:
        if (
            row.target is None
            or row.row_number is None
            or row.action not in (ImportAction.CREATE, ImportAction.UPDATE)
        ):
            continue
        if row.target.password is not None:
            wanted.append(_Password(row.row_number, row.username, row.target.password))
        elif row.action == ImportAction.CREATE:
            wanted.append(_Password(row.row_number, row.username, None))
    return wanted


async def _no_progress(done: int) -> None:
    return None


async def _hash_all(wanted: list[_Password], progress: Progress, done: _Hashed | None = None) -> _Hashed:
    """Every wanted password hashed in parallel threads, reporting progress as they land; those `done` has
    hashed already for the same row, and the same kind (typed, or generated), are kept as they are."""
    done = done or _Hashed()
    hashes: dict[int, str] = {}
    generated: dict[int, GeneratedPassword] = {}
    queued: list[tuple[int, str]] = []
    for password in wanted:
        row = password.row_number
        if row in done.hashes and (row in done.generated) == (password.typed is None):
            hashes[row] = done.hashes[row]
            if row in done.generated:
                generated[row] = GeneratedPassword(password.username, done.generated[row].password)
            continue
        plain = password.typed
        if plain is None:
            plain = memorable_password()
            generated[row] = GeneratedPassword(password.username, plain)
        queued.append((row, plain))

    # Hashed on the bulk threads, a few queued at a time, so sign-in does not wait behind the import.
    async with contextlib.aclosing(hash_in_bulk([password for _, password in queued])) as landing:
        count = 0
        async for index, password_hash in landing:
            hashes[queued[index][0]] = password_hash
            count += 1
            if count % PROGRESS_EVERY == 0:
                await progress(count)
    order = [password.row_number for password in wanted]
    return _Hashed(hashes, {row: generated[row] for row in order if row in generated})


async def _apply(
    session: AsyncSession, school_id: uuid.UUID, actor: Actor, plan: Plan, roster: Roster, hashed: _Hashed
) -> list[GeneratedPassword]:
    hashes = hashed.hashes
    class_ids = {key: class_id for key, class_id in await _class_ids(session, school_id, plan)}
    created: list[uuid.UUID] = []
    updated: list[uuid.UUID] = []
    memberships_out: list[tuple[uuid.UUID, uuid.UUID]] = []
    memberships_in: list[dict[str, Any]] = []
    new_users: list[dict[str, Any]] = []
    for row in plan.rows:
        target = row.target
        if target is None or row.action not in (ImportAction.CREATE, ImportAction.UPDATE):
            continue
        assert row.row_number is not None
        wanted = {
            class_ids[(ClassKind.TEACHING, class_name_key(name))]: ClassKind.TEACHING
            for name in target.teaching_classes
        }
        if target.registration_class:
            wanted[class_ids[(ClassKind.REGISTRATION, class_name_key(target.registration_class))]] = (
                ClassKind.REGISTRATION
            )
        values = {
            "username": target.username,
            "first_name": target.first_name,
            "surname": target.surname,
            "type": target.type,
            "is_admin": target.is_admin,
            "email": target.email,
        }
        if row.action == ImportAction.CREATE:
            user_id = uuid.uuid4()
            new_users.append(
                {"school_id": school_id, "id": user_id, "password_hash": hashes[row.row_number], **values}
            )
            created.append(user_id)
            have: dict[uuid.UUID, ClassKind] = {}
        else:
            assert row.user_id is not None
            user_id = row.user_id
            if row.row_number in hashes:
                values["password_hash"] = hashes[row.row_number]
            await session.execute(
                update(User)
                .where(User.school_id == school_id, User.id == user_id)
                .values(**values, **edited())
            )
            updated.append(user_id)
            existing = roster.users[row.username.lower()]
            have = {
                class_ids[(ClassKind.TEACHING, name)]: ClassKind.TEACHING
                for name in existing.teaching_classes
            }
            if existing.registration_class:
                have[class_ids[(ClassKind.REGISTRATION, class_name_key(existing.registration_class))]] = (
                    ClassKind.REGISTRATION
                )
        memberships_out += [(user_id, class_id) for class_id in have if class_id not in wanted]
        memberships_in += [
            {"school_id": school_id, "class_id": class_id, "user_id": user_id, "kind": kind}
            for class_id, kind in wanted.items()
            if class_id not in have
        ]
    if new_users:
        await session.execute(insert(User), new_users)
    for user_id, class_id in memberships_out:
        await session.execute(
            delete(ClassMembership).where(
                ClassMembership.school_id == school_id,
                ClassMembership.user_id == user_id,
                ClassMembership.class_id == class_id,
            )
        )
    if memberships_in:
        await session.execute(insert(ClassMembership), memberships_in)
    removed = [row.user_id for row in plan.rows if row.action == ImportAction.REMOVE and row.user_id]
    if removed:
        # Only pupils are removed by a roster file.
        await soft_delete(
            session,
            school_id=school_id,
            actor=actor,
            users=[RemovedPupil(user_id) for user_id in removed],
        )
    for action, targets in (
        (AuditAction.USER_CREATED, created),
        (AuditAction.USER_UPDATED, updated),
        (AuditAction.USER_DELETED, removed),
    ):
        if targets:
            await audit.record_by(
                session,
                actor,
                school_id=school_id,
                action=action,
                targets=targets,
                summary={"count": len(targets), "via": "import"},
            )
    return list(hashed.generated.values())


async def _class_ids(
    session: AsyncSession, school_id: uuid.UUID, plan: Plan
) -> list[tuple[tuple[ClassKind, str], uuid.UUID]]:
    """Every class's id by kind and name key, creating the classes the file names that do not exist."""
    session.add_all(
        SchoolClass(school_id=school_id, id=uuid.uuid4(), name=name, kind=kind)
        for kind, name in plan.new_classes
    )
    await session.flush()
    rows = await session.execute(
        select(SchoolClass.kind, SchoolClass.name_key, SchoolClass.id).where(
            SchoolClass.school_id == school_id
        )
    )
    return [((kind, key), class_id) for kind, key, class_id in rows]
