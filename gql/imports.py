"""Bulk upload over GraphQL: `bulkImport` (the preview), `confirmImport` (starts the apply, in the background),
`importJob` and `importJobProgress` (to follow it), `takeGeneratedPasswords` (once, after it ends)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.file_uploads import Upload

from db import models
from db.audit import Actor
from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem
from db.imports import jobs as imports
from db.imports.plan import ImportAction as DomainImportAction
from db.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from db.users import CONTROL_CHARACTERS
from gql.connections import Connection, Edge, PageInfo, bad_page_request
from gql.context import Info
from gql.enums import ClassKind, UserType
from gql.errors import client_error
from gql.ids import Node, parse_id
from gql.payloads import Payload, UserError, user_errors
from gql.permissions import IsAdmin
from gql.progress import Progress, follow, followed_job_id
from tenants import policies
from tenants.callers import Person
from tenants.reauth import reauthenticate
from web.telemetry import IMPORT_JOBS

# Marked as GraphQL enums in place, as in gql.enums.
ImportAction = DomainImportAction
strawberry.enum(ImportAction, description="What applying the file does to one user.")
ImportStatus = models.ImportStatus
strawberry.enum(ImportStatus)


@strawberry.type
class ImportChange:
    field: str
    before: str = strawberry.field(name="from")
    after: str = strawberry.field(name="to")


@strawberry.type
class ImportRowError:
    column: str | None
    message: str


@strawberry.type
class ImportRowValues:
    first_name: str
    surname: str
    type: UserType
    is_admin: bool
    registration_class: str | None
    teaching_classes: list[str]
    email: str | None

    @classmethod
    def from_entry(cls, values: dict[str, Any]) -> ImportRowValues:
        return cls(
            first_name=values["first_name"],
            surname=values["surname"],
            type=models.UserType(values["type"]),
            is_admin=values["is_admin"],
            registration_class=values["registration_class"],
            teaching_classes=values["teaching_classes"],
            email=values["email"],
        )


@strawberry.type(description="One row of the file (or, for REMOVE, a pupil the file leaves out).")
class ImportRow:
    row: int | None = strawberry.field(description="The row number as the spreadsheet shows it (header = 1).")
    username: str
    action: ImportAction
    user_id: strawberry.ID | None
    changes: list[ImportChange]
    errors: list[ImportRowError]
    values: ImportRowValues | None

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> ImportRow:
        values = entry.get("values")
        return cls(
            row=entry["row"],
            username=entry["username"],
            action=DomainImportAction(entry["action"]),
            user_id=strawberry.ID(entry["user_id"]) if entry["user_id"] else None,
            changes=[ImportChange(field=f, before=a, after=b) for f, a, b in entry["changes"]],
            errors=[ImportRowError(column=c, message=m) for c, m in entry["errors"]],
            values=ImportRowValues.from_entry(values) if values else None,
        )


@strawberry.type
class ImportRowConnection(Connection[ImportRow]):
    total_count: int = strawberry.field(description="How many rows (of the action asked for) the job has.")


RowsFirst = Annotated[
    int | None,
    strawberry.argument(
        description=f"How many rows to return from the start (a page): {DEFAULT_PAGE_SIZE} when neither "
        f"`first` nor `last` is given, at most {MAX_PAGE_SIZE}; 0 returns none, for `totalCount` alone."
    ),
]
RowsAfter = Annotated[
    str | None,
    strawberry.argument(description="The `endCursor` of the page before, to read the next page."),
]
RowsLast = Annotated[
    int | None,
    strawberry.argument(
        description=f"How many rows to return from the end instead (at most {MAX_PAGE_SIZE}); not with `first`."
    ),
]
RowsBefore = Annotated[
    str | None,
    strawberry.argument(
        description="The `startCursor` of the page after, to read the page before it (with `last`)."
    ),
]


@strawberry.type
class ImportTotals:
    create: int
    update: int
    unchanged: int
    error: int
    remove: int
    restore: int


@strawberry.type
class NewClass:
    name: str
    kind: ClassKind


@strawberry.type(
    description="An uploaded roster file: PREVIEW until confirmed, then RUNNING, SUCCEEDED or FAILED."
)
class ImportJob(Node):
    id: strawberry.ID
    status: ImportStatus
    file_name: str
    processed: int = strawberry.field(
        description="Rows done so far while RUNNING (a row is done once it is ready to be written, its password "
        "hashed if it needs one), written at most four times a second; for a progress bar."
    )
    total: int
    totals: ImportTotals
    new_classes: list[NewClass] = strawberry.field(
        description="Classes the file names that applying creates."
    )
    warnings: list[str]
    remove_missing_pupils: bool = strawberry.field(
        description="Whether applying deletes the school's pupils the file leaves out (the REMOVE rows), as "
        "asked when the file was uploaded."
    )
    failure_reason: str | None
    created_at: datetime
    expires_at: datetime
    confirmed_by: strawberry.ID | None
    finished_at: datetime | None
    generated_passwords_available_until: datetime | None
    stored: strawberry.Private[models.ImportJob]

    @strawberry.field
    def generated_passwords_available(self, info: Info) -> bool:
        caller = info.context.caller
        return (
            isinstance(caller, Person)
            and caller.user_id == self.stored.confirmed_by
            and imports.generated_passwords_available(self.stored, datetime.now(UTC))
        )

    @strawberry.field
    def rows(
        self,
        action: ImportAction | None = None,
        first: RowsFirst = None,
        after: RowsAfter = None,
        last: RowsLast = None,
        before: RowsBefore = None,
    ) -> ImportRowConnection:
        try:
            page = imports.rows_page(
                self.stored, action=action, first=first, after=after, last=last, before=before
            )
        except DomainError as error:
            raise bad_page_request(error) from None
        return ImportRowConnection(
            edges=[
                Edge(cursor=cursor, node=ImportRow.from_entry(entry))
                for entry, cursor in zip(page.rows, page.cursors, strict=True)
            ],
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                end_cursor=page.cursors[-1] if page.cursors else None,
                has_previous_page=page.has_previous_page,
                start_cursor=page.cursors[0] if page.cursors else None,
            ),
            total_count=page.total_count,
        )

    @classmethod
    def from_row(cls, job: models.ImportJob) -> ImportJob:
        totals = {action.value: job.totals.get(action.value, 0) for action in DomainImportAction}
        return cls(
            id=strawberry.ID(str(job.id)),
            status=job.status,
            file_name=job.file_name,
            processed=job.processed,
            total=job.total,
            totals=ImportTotals(**{k.lower(): v for k, v in totals.items()}),
            new_classes=[NewClass(name=c["name"], kind=models.ClassKind(c["kind"])) for c in job.new_classes],
            warnings=job.warnings,
            remove_missing_pupils=job.remove_missing_pupils,
            failure_reason=job.failure_reason,
            created_at=job.created_at,
            expires_at=job.expires_at,
            confirmed_by=strawberry.ID(str(job.confirmed_by)) if job.confirmed_by else None,
            finished_at=job.finished_at,
            generated_passwords_available_until=imports.generated_passwords_until(job),
            stored=job,
        )


@strawberry.type
class GeneratedPassword:
    username: str
    password: str


@strawberry.type
class ImportJobPayload(Payload):
    job: ImportJob | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class GeneratedPasswordsPayload(Payload):
    job: ImportJob | None = None
    generated_passwords: list[GeneratedPassword] = strawberry.field(default_factory=list)
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ImportQueries:
    @strawberry.field(permission_classes=[IsAdmin], description="An import job, e.g. to follow its progress.")
    async def import_job(self, info: Info, id: strawberry.ID) -> ImportJob | None:
        try:
            job_id = parse_id(id, field="id")
        except DomainError:
            return None
        async with info.context.scope() as session:
            job = await imports.get_job(session, school_id=info.context.signed_in().school_id, job_id=job_id)
        return ImportJob.from_row(job) if job else None


@strawberry.type(description="An import job's progress, as `importJobProgress` sends it.")
class ImportJobProgress(Progress):
    job_id: strawberry.ID
    status: ImportStatus
    failure_reason: str | None = strawberry.field(description="Why it FAILED, once it has.")


_ENDED = frozenset({models.ImportStatus.SUCCEEDED, models.ImportStatus.FAILED})


@strawberry.type
class ImportSubscriptions:
    @strawberry.subscription(
        permission_classes=[IsAdmin],
        description="An import job's status, processed and total: now, then each time they change, until the "
        "job has SUCCEEDED or FAILED (a PREVIEW is followed until it is confirmed and ends). Over WebSocket "
        "(graphql-transport-ws); `importJob` answers the same by polling.",
    )
    async def import_job_progress(
        self, info: Info, id: strawberry.ID
    ) -> AsyncGenerator[ImportJobProgress, None]:
        job_id = followed_job_id(id)
        school_id = info.context.signed_in().school_id

        async def read(session: AsyncSession) -> ImportJobProgress:
            job = await imports.get_job(session, school_id=school_id, job_id=job_id, with_rows=False)
            if job is None:
                raise client_error(f"No import job has the id {job_id}.", ErrorCode.NOT_FOUND.value)
            return ImportJobProgress(
                job_id=strawberry.ID(str(job.id)),
                status=job.status,
                processed=job.processed,
                total=job.total,
                finished=job.status in _ENDED,
                failure_reason=job.failure_reason,
            )

        async for progress in follow(info, policies.require_admin, read):
            yield progress


@strawberry.type
class ImportMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Upload a roster CSV and get its preview; nothing in the roster changes yet.",
    )
    async def bulk_import(
        self, info: Info, file: Upload, remove_missing_pupils: bool = False
    ) -> ImportJobPayload:
        settings = info.context.settings
        if not callable(getattr(file, "read", None)):
            # A JSON request can put only a plain value where the file goes.
            raise client_error("`file` must be a file, sent as a multipart request.", "BAD_REQUEST")
        data = await file.read(settings.import_max_bytes + 1)  # type: ignore[attr-defined]
        file_name = getattr(file, "filename", None) or ""
        try:
            if CONTROL_CHARACTERS.search(file_name):
                # PostgreSQL cannot store a NUL; the others would be shown to admins as they are.
                raise DomainError(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        "The file's name has a control character in it; rename the file and upload it again.",
                        "file",
                    )
                )
            async with info.context.scope() as session:
                job = await imports.preview_import(
                    session,
                    school_id=info.context.signed_in().school_id,
                    actor=info.context.actor(),
                    file_name=file_name,
                    data=data,
                    remove_missing_pupils=remove_missing_pupils,
                    max_bytes=settings.import_max_bytes,
                    max_rows=settings.import_max_rows,
                    server_secret=settings.login_code_secret,
                )
        except DomainError as error:
            IMPORT_JOBS.labels("refused").inc()
            return ImportJobPayload(errors=user_errors(error))
        IMPORT_JOBS.labels("previewed").inc()
        return ImportJobPayload(job=ImportJob.from_row(job))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Apply a previewed import, after you type your own password again: it returns at once "
        "with the job RUNNING, and applies in the background; follow it with `importJobProgress` (or "
        "`importJob`). All of the file applies, or none of it. Once it has SUCCEEDED, take the passwords "
        "it generated with `takeGeneratedPasswords`.",
    )
    async def confirm_import(
        self, info: Info, job_id: strawberry.ID, current_password: str
    ) -> ImportJobPayload:
        context = info.context
        background = context.background
        assert background is not None, "the app gives every request its worker's background tasks"
        try:
            target = parse_id(job_id, field="jobId")
            if not background.accepting:
                raise DomainError(Problem(ErrorCode.IMPORT_NOT_CONFIRMABLE, _STOPPING, "jobId"))
            await reauthenticate(await context.database(), context.signed_in(), current_password)
            started = await imports.start_import(
                await context.database(),
                school_id=context.signed_in().school_id,
                actor=context.actor(),
                job_id=target,
                server_secret=context.login_code_secret,
            )
        except DomainError as error:
            IMPORT_JOBS.labels("refused").inc()
            return ImportJobPayload(errors=user_errors(error))
        try:
            background.start(
                _apply(context.db, started.work, context.actor(), context.login_code_secret),
                name=f"import {started.work.job_id}",
            )
        except RuntimeError:
            # The worker began to stop between the check and now.
            await imports.abandon(context.db, started.work, _STOPPED)
            IMPORT_JOBS.labels("refused").inc()
            return ImportJobPayload(
                errors=user_errors(DomainError(Problem(ErrorCode.IMPORT_NOT_CONFIRMABLE, _STOPPED, "jobId")))
            )
        IMPORT_JOBS.labels("started").inc()
        return ImportJobPayload(job=ImportJob.from_row(started.job))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="The passwords a SUCCEEDED import generated (for the rows of the file with none), for the "
        "admin who confirmed it: once, within an hour of its end. Taking them erases the server's copy.",
    )
    async def take_generated_passwords(self, info: Info, job_id: strawberry.ID) -> GeneratedPasswordsPayload:
        context = info.context
        try:
            target = parse_id(job_id, field="jobId")
            async with context.scope() as session:
                job, generated = await imports.take_generated_passwords(
                    session,
                    school_id=context.signed_in().school_id,
                    actor=context.actor(),
                    job_id=target,
                    server_secret=context.login_code_secret,
                )
        except DomainError as error:
            return GeneratedPasswordsPayload(errors=user_errors(error))
        return GeneratedPasswordsPayload(
            job=ImportJob.from_row(job),
            generated_passwords=[
                GeneratedPassword(username=g.username, password=g.password) for g in generated
            ],
        )


_STOPPING = "This server is stopping; confirm again in a moment."
_STOPPED = "This server stopped before the import could start; nothing was changed. Upload the file again."


async def _apply(db: Database, work: imports.Work, actor: Actor, server_secret: bytes) -> None:
    """The background apply of a confirmed import, counted by how it ended."""
    status = await imports.apply_import(db, work, actor=actor, server_secret=server_secret)
    IMPORT_JOBS.labels("succeeded" if status == models.ImportStatus.SUCCEEDED else "failed").inc()
