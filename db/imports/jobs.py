"""Bulk upload: preview a roster file as an import job, then, once it is confirmed, apply it whole.

Confirming (`start_import`) moves the job to RUNNING and returns; the apply (`apply_import`) then runs in
the background of the same worker, and ends the job SUCCEEDED or FAILED (with its reason). It runs in ONE
transaction. The passwords are hashed before it opens (the slow part: seconds for a big file), against a
draft plan of the roster as it is then; the transaction plans again under the roster's lock, uses the hashes
that still fit and hashes only what the roster's changes in between call for. So the transaction holds the
lock for the writes alone.

Progress (`processed` of `total`, in rows of the plan: a row is done once it is ready to be written, its
password hashed if it needs one) is written by a `ProgressWriter`, a task of its own, in short transactions
that touch only the job's row and only while it is RUNNING, each on a connection it takes from the pool for
that write alone (so an apply holds one connection at a time, and many at once cannot each hold one and wait
for another). The apply never waits for the writer while its transaction is open (it only tells
it to stop, then writes the job's row itself, last): so it never waits for a second connection while it
holds one (behind a pooler with few server connections that wait could be forever), and a write the writer
has under way at the end finds the job ended and changes nothing. The writer writes at most every
PROGRESS_SECONDS, and at least every HEARTBEAT_SECONDS while the job runs: a RUNNING job whose `updated_at`
stands still for STALE_IMPORT has lost its worker, and is failed when it is read.

The passwords the apply generates are sealed into the job in the apply's transaction; the admin who
confirmed it takes them once (`take_generated_passwords`), within GENERATED_PASSWORDS_KEPT of the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlalchemy.sql.dml import Update

from db import audit
from db.audit import Actor, AuditAction
from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem
from db.imports.plan import WRITES, ExistingUser, ImportAction, Plan, PlannedRow, Roster, plan_import
from db.imports.roster_csv import CsvError, ExportRow, RosterRow, RowProblem, decode_upload, parse_roster
from db.imports.sealed_passwords import GENERATED, SealBroken, seal, unseal
from db.maintenance import (
    GENERATED_PASSWORDS_KEPT,
    IMPORT_HEARTBEAT,
    STALE_IMPORT,
    STALE_REASON,
    fail_stale_imports_of,
)
from db.manage_users import lock_roster, restore_users, soft_delete
from db.models import ClassKind, ClassMembership, ImportJob, ImportStatus, School, SchoolClass, User, UserType
from db.names import class_name_key
from db.pagination import decode_cursor, encode_cursor, page_size
from db.passwords import hash_in_bulk, memorable_password
from db.schools import require_manual_school
from db.scope import school_scope
from db.users import edited

log = logging.getLogger("rollcall.imports")
PROGRESS_SECONDS = 0.25  # the most often progress is written
HEARTBEAT_SECONDS = IMPORT_HEARTBEAT.total_seconds()  # the least often, while the job runs
Landed = Callable[[int], None]  # told how many passwords have been hashed so far
FAILED_REASON = "The import failed and nothing was changed; try again, or ask for help if it keeps failing."


@dataclass(frozen=True, slots=True)
class RemovedPupil:
    id: uuid.UUID
    type: UserType = UserType.PUPIL


@dataclass(frozen=True, slots=True)
class GeneratedPassword:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Work:
    """What the apply of a confirmed job needs, taken from the job as it moved to RUNNING (the typed
    passwords among the rows: in memory only, from there on)."""

    school_id: uuid.UUID
    job_id: uuid.UUID
    rows: list[RosterRow] = field(repr=False)
    columns: frozenset[str]
    remove_missing_pupils: bool
    total: int
    # Whom the preview showed each row applying to: the apply refuses a plan that would touch anyone else.
    previewed: frozenset[Whom]


# A row of a plan by whom it applies to: its row number (None: a pupil the file leaves out), its username and
# the user it changes (None: a user it creates).
Whom = tuple[int | None, str, str | None]


def _whom(row: PlannedRow) -> Whom:
    return (row.row_number, row.username, str(row.user_id) if row.user_id else None)


@dataclass(frozen=True, slots=True)
class Started:
    job: ImportJob
    work: Work


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


async def _deleted_users(session: AsyncSession, school_id: uuid.UUID) -> Sequence[User]:
    """The deleted users, the latest deleted last (so it is the one a username finds)."""
    return (
        (
            await session.execute(
                select(User)
                .where(User.school_id == school_id, User.deleted_at.is_not(None))
                .order_by(User.deleted_at, User.id)
            )
        )
        .scalars()
        .all()
    )


async def load_roster(session: AsyncSession, school_id: uuid.UUID) -> Roster:
    """The school's active users with their classes, every class, and the deleted users a file may restore."""
    school = await session.get_one(School, school_id)
    registration, teaching = await _classes_by_user(session, school_id)

    def existing(user: User) -> ExistingUser:
        names = sorted(teaching.get(user.id, ()), key=class_name_key)
        return ExistingUser(
            id=user.id,
            username=user.username,
            first_name=user.first_name,
            surname=user.surname,
            type=user.type,
            is_admin=user.is_admin,
            registration_class=registration.get(user.id),
            teaching_classes=frozenset(class_name_key(name) for name in names),
            email=user.email,
            teaching_class_names=tuple(names),
        )

    users = {user.username.lower(): existing(user) for user in await _active_users(session, school_id)}
    classes = await session.execute(
        select(SchoolClass.kind, SchoolClass.name).where(SchoolClass.school_id == school_id)
    )
    return Roster(
        users=users,
        classes={(kind, class_name_key(name)): name for kind, name in classes},
        pupil_min_password_length=school.pupil_min_password_length,
        deleted={user.username.lower(): existing(user) for user in await _deleted_users(session, school_id)},
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
    target = row.target
    row_number, username, user_id = _whom(row)
    return {
        "row": row_number,
        "username": username,
        "action": row.action.value,
        "user_id": user_id,
        "changes": [[name, old, new] for name, (old, new) in row.changes.items()],
        "errors": [[p.column, p.message] for p in row.errors],
        # What the user will be, as the file spells it (a column the file lacks: as the user is now).
        "values": {
            "first_name": target.first_name,
            "surname": target.surname,
            "type": target.type.value,
            "is_admin": target.is_admin,
            "registration_class": target.registration_class,
            "teaching_classes": list(target.teaching_classes),
            "email": target.email,
        }
        if target is not None and row.action in (*WRITES, ImportAction.UNCHANGED)
        else None,
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


async def get_job(
    session: AsyncSession, *, school_id: uuid.UUID, job_id: uuid.UUID, with_rows: bool = True
) -> ImportJob | None:
    """The job; one left RUNNING by a worker that died (no progress nor heartbeat for STALE_IMPORT) is failed
    as it is read. Without `with_rows` its rows (the biggest part, for a big file) are not read: a progress
    read, several times a second, needs none of them."""
    await fail_stale_imports_of(session, school_id, older_than=STALE_IMPORT)
    query = select(ImportJob).where(ImportJob.school_id == school_id, ImportJob.id == job_id)
    if not with_rows:
        query = query.options(defer(ImportJob.rows, raiseload=True))
    return (await session.execute(query)).scalar_one_or_none()


ROW_CURSOR = "import-row"  # a row cursor's tag: a cursor of another list is refused


@dataclass(frozen=True, slots=True)
class RowsPage:
    rows: list[dict[str, Any]]  # as the job stores them
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool
    total_count: int


def _row_position(cursor: str, argument: str) -> int:
    _, position = decode_cursor(cursor, parse=[_row_tag, _place], argument=argument)
    return int(position)


def _place(value: object) -> int:
    """A row's place as the list writes it in a cursor: digits, nothing else (no sign, space or `_`)."""
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9):
        raise ValueError(value)
    return int(value)


def _row_tag(value: str) -> str:
    if value != ROW_CURSOR:
        raise ValueError(value)
    return value


def rows_page(
    job: ImportJob,
    *,
    action: ImportAction | None,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> RowsPage:
    """A page of the job's rows (optionally one action's), in the file's order (then the REMOVE rows), paged as
    every list is: the first `first` after `after`, or the last `last` before `before`. A cursor names the
    row's place in the job, so it is good with any `action`."""
    if first is not None and last is not None:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, "Give first or last, not both: a page is read one way.", "last")
        )
    backward = last is not None
    size = page_size(last if backward else first, least=0, argument="last" if backward else "first")
    start = _row_position(after, "after") if after is not None else -1
    end = _row_position(before, "before") if before is not None else len(job.rows)
    chosen = [
        (position, entry)
        for position, entry in enumerate(job.rows)
        if "action" in entry and (action is None or entry["action"] == action.value)
    ]
    within = [(position, entry) for position, entry in chosen if start < position < end]
    page = within[-size:] if backward and size else within[:size]
    more = len(within) > size
    return RowsPage(
        rows=[entry for _, entry in page],
        cursors=[encode_cursor([ROW_CURSOR, str(position)]) for position, _ in page],
        # Past the window, in the other direction: are there rows (of this action) beyond the cursor?
        has_next_page=any(position >= end for position, _ in chosen) if backward else more,
        has_previous_page=more if backward else any(position <= start for position, _ in chosen),
        total_count=len(chosen),
    )


async def _locked_job(session: AsyncSession, school_id: uuid.UUID, job_id: uuid.UUID) -> ImportJob:
    """The school's job, its row locked for the rest of the transaction; NOT_FOUND when it has none by that id."""
    job = (
        await session.execute(
            select(ImportJob)
            .where(ImportJob.school_id == school_id, ImportJob.id == job_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if job is None:
        raise DomainError(Problem(ErrorCode.NOT_FOUND, f"No import job has the id {job_id}.", "jobId"))
    return job


def _refuse(message: str) -> DomainError:
    return DomainError(Problem(ErrorCode.IMPORT_NOT_CONFIRMABLE, message, "jobId"))


async def start_import(
    db: Database, *, school_id: uuid.UUID, actor: Actor, job_id: uuid.UUID, server_secret: bytes
) -> Started:
    """Confirm a previewed job (the caller has re-authenticated): move it from PREVIEW to RUNNING, once only,
    as confirmed by `actor`, and take what the apply needs. `apply_import(started.work)` then applies it."""
    async with school_scope(db, school_id) as session:
        job = await _locked_job(session, school_id, job_id)
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
        job.confirmed_by = actor.id
        await session.flush()
        await session.refresh(job)
        previewed = frozenset(
            (entry["row"], entry["username"], entry["user_id"]) for entry in job.rows if "action" in entry
        )
        work = Work(
            school_id, job_id, rows, frozenset(job.columns), job.remove_missing_pupils, job.total, previewed
        )
        return Started(job=job, work=work)


def _while_running(school_id: uuid.UUID, job_id: uuid.UUID) -> Update:
    """An update of the job that changes it only while it is RUNNING: every write of a running apply (its
    progress, its end, its failure), so none changes a job another has ended meanwhile."""
    return update(ImportJob).where(
        ImportJob.school_id == school_id, ImportJob.id == job_id, ImportJob.status == ImportStatus.RUNNING
    )


class ProgressWriter:
    """Writes a RUNNING job's `processed` (and `updated_at`) in a short transaction of its own, on a connection
    it takes from the pool for that write and gives back at once: at most every `every` seconds, when it has
    moved, and at least every `heartbeat` seconds. It holds no connection between writes, so an apply holds
    one connection at a time (its own transaction's) and many applies at once cannot each hold one and wait
    for a second.

    `done` is set by the apply as it goes (no waiting); `flush()` writes it now; `stop_soon()` (no waiting:
    the apply's transaction may be open) writes no more; leaving the `async with` waits for the write under
    way, if any. A write that fails (the database went away) is skipped: the next one takes a fresh
    connection."""

    def __init__(
        self,
        db: Database,
        school_id: uuid.UUID,
        job_id: uuid.UUID,
        *,
        every: float = PROGRESS_SECONDS,
        heartbeat: float | None = None,
    ) -> None:
        self.db, self.school_id, self.job_id = db, school_id, job_id
        self.every = every
        self.heartbeat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
        self.done = 0
        self.writes = 0
        self._written: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"import {self.job_id} progress")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop_soon()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.every)
            if self._stopping.is_set():
                return
            if self.done != self._written or loop.time() - last >= self.heartbeat:
                await self._write()
                last = loop.time()

    async def _write(self) -> None:
        async with self._lock:
            done = self.done
            try:
                async with self.db.engine.begin() as connection:
                    await connection.execute(
                        text("select set_config('app.school_id', :school_id, true)"),
                        {"school_id": str(self.school_id)},
                    )
                    await connection.execute(
                        _while_running(self.school_id, self.job_id).values(
                            processed=done, updated_at=func.now()
                        )
                    )
            except (SQLAlchemyError, OSError, TimeoutError):
                # A missed write only delays the bar; the apply's own transaction decides the job.
                log.warning("could not write the progress of import %s", self.job_id, exc_info=True)
                return
            self._written = done
            self.writes += 1

    async def flush(self) -> None:
        """Write `done` now, if it has moved since the last write (the end of a phase)."""
        if not self._stopping.is_set() and self.done != self._written:
            await self._write()

    def stop_soon(self) -> None:
        """No more writes after the one under way, if any (which finds the job ended, once it has)."""
        self._stopping.set()


async def apply_import(db: Database, work: Work, *, actor: Actor, server_secret: bytes) -> ImportStatus:
    """Apply a started job, all of it in one transaction or none of it, and end it SUCCEEDED or FAILED (with
    its reason), which it returns. Cancelled (the server is stopping), it fails the job and is cancelled."""
    school_id, job_id = work.school_id, work.job_id
    rows, columns, remove_missing = work.rows, work.columns, work.remove_missing_pupils
    try:
        async with ProgressWriter(db, school_id, job_id) as writer:
            async with school_scope(db, school_id) as session:
                await require_manual_school(session, school_id)
                draft = plan_import(
                    rows, columns, await load_roster(session, school_id), remove_missing_pupils=remove_missing
                )
            wanted = _passwords_wanted(draft) if not draft.has_errors else []
            ready = max(len(draft.rows) - len(wanted), 0)

            def landed(count: int) -> None:
                writer.done = min(ready + count, work.total)

            landed(0)
            hashed = await _hash_all(wanted, landed)
            await writer.flush()
            async with school_scope(db, school_id, actor) as session:
                await require_manual_school(session, school_id)
                await lock_roster(session, school_id)
                roster = await load_roster(session, school_id)
                plan = plan_import(rows, columns, roster, remove_missing_pupils=remove_missing)
                if plan.has_errors or frozenset(_whom(row) for row in plan.rows) != work.previewed:
                    raise DomainError(
                        Problem(
                            ErrorCode.IMPORT_NOT_CONFIRMABLE,
                            "The roster changed since the preview and the file no longer applies; "
                            "download the roster again and upload a fresh file.",
                            "jobId",
                        )
                    )
                # What the roster's changes since the draft call for, if anything, is hashed here.
                hashed = await _hash_all(_passwords_wanted(plan), _not_counted, hashed)
                generated = await _apply(session, school_id, actor, plan, roster, hashed)
                writer.stop_soon()
                ended = (
                    await session.execute(
                        _while_running(school_id, job_id)
                        .values(
                            status=ImportStatus.SUCCEEDED,
                            processed=work.total,
                            totals=plan.totals(),
                            finished_at=func.now(),
                            updated_at=func.now(),
                            generated_passwords=len(generated),
                            sealed_generated_passwords=seal(
                                {g.username: g.password for g in generated},
                                server_secret=server_secret,
                                school_id=school_id,
                                job_id=job_id,
                                kind=GENERATED,
                            )
                            if generated
                            else None,
                        )
                        .returning(ImportJob.id)
                    )
                ).scalar_one_or_none()
                if ended is None:
                    # Failed meanwhile as stale (its worker seemed gone): the roster stays as it was.
                    raise _Abandoned
    except _Abandoned:
        log.warning("import %s was failed while it ran; its changes were rolled back", job_id)
        return ImportStatus.FAILED
    except DomainError as error:
        await _fail(db, school_id, job_id, error.problems[0].message)
        return ImportStatus.FAILED
    except asyncio.CancelledError:
        await _fail(db, school_id, job_id, STALE_REASON)
        raise
    except Exception:
        log.exception("import %s failed", job_id)
        await _fail(db, school_id, job_id, FAILED_REASON)
        return ImportStatus.FAILED
    return ImportStatus.SUCCEEDED


async def confirm_import(
    db: Database, *, school_id: uuid.UUID, actor: Actor, job_id: uuid.UUID, server_secret: bytes
) -> ImportStatus:
    """Start the job and apply it here, waiting for its end (what GraphQL runs in the background)."""
    started = await start_import(
        db, school_id=school_id, actor=actor, job_id=job_id, server_secret=server_secret
    )
    return await apply_import(db, started.work, actor=actor, server_secret=server_secret)


async def abandon(db: Database, work: Work, reason: str) -> None:
    """A started job whose apply will not run (the worker is stopping): FAILED, with its reason."""
    await _fail(db, work.school_id, work.job_id, reason)


class _Abandoned(Exception):
    """The job was no longer RUNNING when the apply came to end it."""


async def _fail(db: Database, school_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> None:
    """Record the failure; if the database is gone too, the job is failed when it is next read or at start-up."""
    try:
        async with school_scope(db, school_id) as session:
            await session.execute(
                _while_running(school_id, job_id).values(
                    status=ImportStatus.FAILED,
                    failure_reason=reason,
                    sealed_passwords=None,
                    finished_at=func.now(),
                    updated_at=func.now(),
                )
            )
    except (SQLAlchemyError, OSError):
        log.warning("could not mark import %s FAILED", job_id, exc_info=True)


def generated_passwords_until(job: ImportJob) -> datetime | None:
    """Until when the job's generated passwords may be taken; None if it has none (or has not finished)."""
    if job.generated_passwords == 0 or job.finished_at is None:
        return None
    return job.finished_at + GENERATED_PASSWORDS_KEPT


def generated_passwords_available(job: ImportJob, now: datetime) -> bool:
    until = generated_passwords_until(job)
    return (
        job.sealed_generated_passwords is not None
        and job.generated_passwords_taken_at is None
        and until is not None
        and now < until
    )


async def take_generated_passwords(
    session: AsyncSession, *, school_id: uuid.UUID, actor: Actor, job_id: uuid.UUID, server_secret: bytes
) -> tuple[ImportJob, list[GeneratedPassword]]:
    """The passwords the job's apply generated, in the file's order, for the admin who confirmed it: once,
    within GENERATED_PASSWORDS_KEPT of its end. The sealed copy is erased in the same transaction (the row is
    locked: of two takes at once, one gets them and the other GENERATED_PASSWORDS_TAKEN)."""

    def refuse(code: ErrorCode, message: str) -> DomainError:
        return DomainError(Problem(code, message, "jobId"))

    job = await _locked_job(session, school_id, job_id)
    if job.confirmed_by is None:
        raise refuse(ErrorCode.NO_GENERATED_PASSWORDS, "This import has not been confirmed.")
    if job.confirmed_by != actor.id:
        raise refuse(
            ErrorCode.NOT_YOUR_IMPORT, "Only the admin who confirmed this import may take its passwords."
        )
    if job.generated_passwords_taken_at is not None:
        raise refuse(
            ErrorCode.GENERATED_PASSWORDS_TAKEN,
            "These passwords have been taken already; reset the passwords of anyone who did not get theirs.",
        )
    if job.status == ImportStatus.RUNNING:
        raise refuse(
            ErrorCode.NO_GENERATED_PASSWORDS, "This import is still running; take them once it ends."
        )
    if job.status != ImportStatus.SUCCEEDED or job.generated_passwords == 0:
        raise refuse(ErrorCode.NO_GENERATED_PASSWORDS, "This import generated no passwords.")
    now = (await session.execute(select(func.now()))).scalar_one()
    expired = refuse(
        ErrorCode.GENERATED_PASSWORDS_EXPIRED,
        "These passwords were kept for an hour after the import ended and are gone; reset the passwords "
        "of the users who need one.",
    )
    if not generated_passwords_available(job, now) or job.sealed_generated_passwords is None:
        raise expired
    try:
        passwords = unseal(
            job.sealed_generated_passwords,
            server_secret=server_secret,
            school_id=school_id,
            job_id=job_id,
            kind=GENERATED,
        )
    except SealBroken:
        raise expired from None
    job.sealed_generated_passwords, job.generated_passwords_taken_at = None, func.now()
    job.updated_at = func.now()
    await session.flush()
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.IMPORT_PASSWORDS_TAKEN,
        summary={"job_id": str(job_id), "count": len(passwords)},
    )
    await session.refresh(job)
    return job, [GeneratedPassword(username, password) for username, password in passwords.items()]


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
        if row.target is None or row.row_number is None or row.action not in WRITES:
            continue
        if row.target.password is not None:
            wanted.append(_Password(row.row_number, row.username, row.target.password))
        elif row.action == ImportAction.CREATE:
            wanted.append(_Password(row.row_number, row.username, None))
    return wanted


def _not_counted(count: int) -> None:
    return None


async def _hash_all(wanted: list[_Password], landed: Landed, done: _Hashed | None = None) -> _Hashed:
    """Every wanted password hashed in parallel threads, telling `landed` how many as they land; those `done`
    has hashed already for the same row, and the same kind (typed, or generated), are kept as they are."""
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
            landed(count)
    order = [password.row_number for password in wanted]
    return _Hashed(hashes, {row: generated[row] for row in order if row in generated})


async def _apply(
    session: AsyncSession, school_id: uuid.UUID, actor: Actor, plan: Plan, roster: Roster, hashed: _Hashed
) -> list[GeneratedPassword]:
    hashes = hashed.hashes
    class_ids = {key: class_id for key, class_id in await _class_ids(session, school_id, plan)}
    created: list[uuid.UUID] = []
    updated: list[uuid.UUID] = []
    restored: list[uuid.UUID] = []
    memberships_out: list[tuple[uuid.UUID, uuid.UUID]] = []
    memberships_in: list[dict[str, Any]] = []
    new_users: list[dict[str, Any]] = []
    for row in plan.rows:
        target = row.target
        if target is None or row.action not in WRITES:
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
            if row.action == ImportAction.RESTORE:
                restored.append(user_id)
                existing = roster.deleted[row.username.lower()]
            else:
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
    if restored:
        # Updated above while still deleted, so the restore checks the username and email they come back with.
        await restore_users(session, school_id=school_id, actor=actor, user_ids=restored)
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
        (AuditAction.USER_UPDATED, updated + restored),
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
