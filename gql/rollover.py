"""The new school year over GraphQL: `planRollover` (the preview), `confirmRollover` (the apply),
`revertRollover` (the undo), `rolloverJob` and `rolloverJobProgress` (progress)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from db import models
from db.errors import DomainError, ErrorCode, Problems
from db.rollover import jobs as rollovers
from db.rollover.plan import ClassAction as DomainClassAction
from db.rollover.plan import RolloverAction as DomainRolloverAction
from db.rollover.plan import Step
from gql.context import Info
from gql.enums import ClassKind
from gql.errors import client_error
from gql.ids import parse_id
from gql.payloads import UserError, user_errors
from gql.permissions import IsAdmin
from gql.progress import Progress, follow, followed_job_id
from tenants import policies
from tenants.reauth import reauthenticate

# Marked as GraphQL enums in place, as in gql.enums.
RolloverAction = DomainRolloverAction
strawberry.enum(
    RolloverAction,
    description="What a rollover does to one registration class.",
)
TeachingClassAction = models.TeachingAction
strawberry.enum(
    TeachingClassAction,
    name="TeachingClassAction",
    description="What a rollover does to every teaching class.",
)
RolloverStatus = models.RolloverStatus
strawberry.enum(RolloverStatus, description="Where a rollover is.")
RolloverClassAction = DomainClassAction
strawberry.enum(
    RolloverClassAction,
    name="RolloverClassAction",
    description="What a rollover does to one class, of either kind.",
)
RolloverPupilOutcome = models.RolloverOutcome
strawberry.enum(
    RolloverPupilOutcome, name="RolloverPupilOutcome", description="Where a rollover takes one pupil."
)


@strawberry.input(description="What happens to one registration class.")
class RegistrationClassStep:
    class_id: strawberry.ID = strawberry.field(description="The registration class.")
    action: RolloverAction = strawberry.field(description="KEEP, RENAME, MOVE_TO or LEAVE.")
    new_name: str | None = strawberry.field(
        default=None, description="RENAME: the class's new name ('P3' becomes 'P4'); it keeps its pupils."
    )
    target_class_id: strawberry.ID | None = strawberry.field(
        default=None, description="MOVE_TO: an existing registration class its pupils move into."
    )
    target_class_name: str | None = strawberry.field(
        default=None,
        description="MOVE_TO: the name of a new registration class the rollover creates for its pupils.",
    )


@strawberry.input(description="A rollover's plan: every step happens at once.")
class RolloverInput:
    registration_classes: list[RegistrationClassStep] = strawberry.field(
        description="A step per registration class to change; classes not named are KEEP."
    )
    teaching_classes: TeachingClassAction = strawberry.field(
        default=models.TeachingAction.KEEP,
        description="What happens to every teaching class: KEEP, EMPTY (its pupils leave it; its teachers "
        "stay) or DELETE.",
    )
    rotate_login_codes: bool = strawberry.field(
        default=True,
        description="Rotate every pupil's login code: new year, new cards (last year's stop working).",
    )


@strawberry.type(description="What a rollover does to one class.")
class RolloverClass:
    class_id: strawberry.ID | None = strawberry.field(
        description="The class; null for a class the rollover creates, until it is applied."
    )
    name: str = strawberry.field(description="Its name before the rollover (a new class: its name).")
    kind: ClassKind = strawberry.field(description="REGISTRATION or TEACHING.")
    action: RolloverClassAction = strawberry.field(description="What happens to it.")
    new_name: str | None = strawberry.field(description="RENAME: its name after the rollover.")
    target_class_id: strawberry.ID | None = strawberry.field(
        description="MOVE_TO: the class its pupils move into (null for a new one until it is applied)."
    )
    target_class_name: str | None = strawberry.field(
        description="MOVE_TO: the name, after the rollover, of the class its pupils move into."
    )
    pupils: int = strawberry.field(description="Its active pupils before the rollover.")
    pupils_after: int = strawberry.field(description="Its active pupils after the rollover.")

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> RolloverClass:
        return cls(
            class_id=strawberry.ID(entry["class_id"]) if entry["class_id"] else None,
            name=entry["name"],
            kind=models.ClassKind(entry["kind"]),
            action=DomainClassAction(entry["action"]),
            new_name=entry["new_name"],
            target_class_id=strawberry.ID(entry["target_class_id"]) if entry["target_class_id"] else None,
            target_class_name=entry["target_class_name"],
            pupils=entry["pupils"],
            pupils_after=entry["pupils_after"],
        )


@strawberry.type(description="Where a rollover takes one pupil.")
class RolloverPupil:
    user_id: strawberry.ID = strawberry.field(description="The pupil.")
    username: str | None = strawberry.field(description="Their username; null once they are purged.")
    first_name: str | None = strawberry.field(description="Their first name; null once they are purged.")
    surname: str | None = strawberry.field(description="Their surname; null once they are purged.")
    outcome: RolloverPupilOutcome = strawberry.field(description="MOVED, RENAMED, LEAVING or UNCHANGED.")
    from_class_id: strawberry.ID | None = strawberry.field(
        description="Their registration class before the rollover."
    )
    from_class_name: str | None = strawberry.field(description="Its name before the rollover.")
    to_class_id: strawberry.ID | None = strawberry.field(
        description="Their registration class after it (null for leavers, and for a class still to create)."
    )
    to_class_name: str | None = strawberry.field(description="Its name after the rollover; null for leavers.")

    @classmethod
    def from_line(cls, line: rollovers.PupilLine) -> RolloverPupil:
        return cls(
            user_id=strawberry.ID(str(line.user_id)),
            username=line.username,
            first_name=line.first_name,
            surname=line.surname,
            outcome=line.outcome,
            from_class_id=strawberry.ID(str(line.from_class_id)) if line.from_class_id else None,
            from_class_name=line.from_class_name,
            to_class_id=strawberry.ID(str(line.to_class_id)) if line.to_class_id else None,
            to_class_name=line.to_class_name,
        )


@strawberry.type(
    description="How many pupils the rollover moves, renames, makes leave and leaves as they are."
)
class RolloverTotals:
    moved: int = strawberry.field(description="Pupils moving into another registration class.")
    renamed: int = strawberry.field(description="Pupils staying in their class, which is renamed.")
    leaving: int = strawberry.field(description="Pupils leaving the school (deleted; restorable).")
    unchanged: int = strawberry.field(description="Pupils whose registration class stays as it is.")


@strawberry.type(description="Something a revert could not put back, because it changed since the rollover.")
class RolloverConflict:
    message: str = strawberry.field(description="What changed.")
    user_id: strawberry.ID | None = strawberry.field(description="The user concerned, if one is.")
    class_id: strawberry.ID | None = strawberry.field(description="The class concerned, if one is.")


@strawberry.type(
    description="A school-year rollover: PREVIEW until confirmed, then RUNNING and SUCCEEDED (or FAILED), and "
    "REVERTED once undone."
)
class RolloverJob:
    id: strawberry.ID = strawberry.field(
        description="The rollover's id, for confirmRollover and revertRollover."
    )
    status: RolloverStatus = strawberry.field(description="Where the rollover is.")
    teaching_classes: TeachingClassAction = strawberry.field(
        description="What happens to every teaching class."
    )
    rotate_login_codes: bool = strawberry.field(description="Whether every pupil's login code rotates.")
    classes: list[RolloverClass] = strawberry.field(description="Every class and what happens to it.")
    totals: RolloverTotals = strawberry.field(description="How many pupils end up where.")
    school_pupils: int = strawberry.field(description="The school's active pupils.")
    leavers_to_confirm: bool = strawberry.field(
        description="More than a tenth of the pupils leave: confirmRollover needs expectedLeavers."
    )
    processed: int = strawberry.field(description="Pupils done so far; with total, a progress bar.")
    total: int = strawberry.field(description="Pupils in all.")
    failure_reason: str | None = strawberry.field(description="Why a FAILED rollover failed.")
    conflicts: list[RolloverConflict] = strawberry.field(
        description="What a revert with skipConflicts left as it was, and why."
    )
    created_at: datetime = strawberry.field(description="When it was planned.")
    expires_at: datetime = strawberry.field(description="When a preview that was not confirmed lapses.")
    applied_at: datetime | None = strawberry.field(description="When it was applied.")
    reverted_at: datetime | None = strawberry.field(description="When it was reverted.")
    school_id: strawberry.Private[Any]
    job_id: strawberry.Private[Any]

    @strawberry.field(description="Where each pupil ends up, by username; a page at a time.")
    async def pupils(
        self,
        info: Info,
        outcome: Annotated[
            RolloverPupilOutcome | None,
            strawberry.argument(description="Only the pupils of this outcome, such as LEAVING."),
        ] = None,
        first: Annotated[int, strawberry.argument(description="How many to return; at most 5000.")] = 1000,
        offset: Annotated[int, strawberry.argument(description="How many to skip first.")] = 0,
    ) -> list[RolloverPupil]:
        async with info.context.scope() as session:
            lines = await rollovers.job_pupils(
                session,
                school_id=self.school_id,
                job_id=self.job_id,
                outcome=outcome,
                first=first,
                offset=offset,
            )
        return [RolloverPupil.from_line(line) for line in lines]

    @classmethod
    def from_row(cls, job: models.RolloverJob) -> RolloverJob:
        return cls(
            id=strawberry.ID(str(job.id)),
            status=job.status,
            teaching_classes=job.teaching_action,
            rotate_login_codes=job.rotate_login_codes,
            classes=[RolloverClass.from_entry(entry) for entry in job.classes],
            totals=RolloverTotals(**{name: job.totals.get(name, 0) for name in rollovers.TOTALS}),
            school_pupils=job.pupils,
            leavers_to_confirm=job.leaving > job.pupils * rollovers.LEAVERS_TO_CONFIRM,
            processed=job.processed,
            total=job.total,
            failure_reason=job.failure_reason,
            conflicts=[
                RolloverConflict(
                    message=c["message"],
                    user_id=strawberry.ID(c["user_id"]) if c["user_id"] else None,
                    class_id=strawberry.ID(c["class_id"]) if c["class_id"] else None,
                )
                for c in job.conflicts
            ],
            created_at=job.created_at,
            expires_at=job.expires_at,
            applied_at=job.applied_at,
            reverted_at=job.reverted_at,
            school_id=job.school_id,
            job_id=job.id,
        )


@strawberry.type(description="A rollover, or why nothing changed.")
class RolloverPayload:
    job: RolloverJob | None = strawberry.field(default=None, description="The rollover.")
    errors: list[UserError] = strawberry.field(
        default_factory=list,
        description="What was wrong, each with a code (per class: `field` names the step); empty on success.",
    )


def _steps(given: RolloverInput) -> list[Step]:
    problems = Problems()
    steps = []
    for index, step in enumerate(given.registration_classes):
        at = f"registrationClasses[{index}]"
        class_id = problems.check(partial(parse_id, step.class_id, field=f"{at}.classId"))
        target = None
        if step.target_class_id is not None:
            target = problems.check(partial(parse_id, step.target_class_id, field=f"{at}.targetClassId"))
        if class_id is not None:
            steps.append(Step(class_id, step.action, step.new_name, target, step.target_class_name))
    problems.raise_any()
    return steps


@strawberry.type
class RolloverQueries:
    @strawberry.field(
        permission_classes=[IsAdmin], description="A rollover, e.g. to page its pupils or follow it."
    )
    async def rollover_job(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The id planRollover answered with.")],
    ) -> RolloverJob | None:
        try:
            job_id = parse_id(id, field="id")
        except DomainError:
            return None
        async with info.context.scope() as session:
            job = await rollovers.get_rollover_job(
                session, school_id=info.context.signed_in().school_id, job_id=job_id
            )
        return RolloverJob.from_row(job) if job else None


@strawberry.type(description="A rollover's progress, as `rolloverJobProgress` sends it.")
class RolloverJobProgress(Progress):
    job_id: strawberry.ID = strawberry.field(description="The rollover's id.")
    status: RolloverStatus = strawberry.field(description="Where the rollover is.")
    failure_reason: str | None = strawberry.field(description="Why it FAILED, once it has.")


_ENDED = frozenset(
    {models.RolloverStatus.SUCCEEDED, models.RolloverStatus.FAILED, models.RolloverStatus.REVERTED}
)


@strawberry.type
class RolloverSubscriptions:
    @strawberry.subscription(
        permission_classes=[IsAdmin],
        description="A rollover's status, processed and total: now, then each time they change, until it has "
        "SUCCEEDED, FAILED or been REVERTED (a PREVIEW is followed until it is confirmed and ends). Over "
        "WebSocket (graphql-transport-ws); `rolloverJob` answers the same by polling.",
    )
    async def rollover_job_progress(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="The rollover's id, from planRollover.")
        ],
    ) -> AsyncGenerator[RolloverJobProgress, None]:
        job_id = followed_job_id(id)
        school_id = info.context.signed_in().school_id

        async def read(session: AsyncSession) -> RolloverJobProgress:
            job = await rollovers.get_rollover_job(session, school_id=school_id, job_id=job_id)
            if job is None:
                raise client_error(f"No rollover has the id {job_id}.", ErrorCode.NOT_FOUND.value)
            return RolloverJobProgress(
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
class RolloverMutations:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Plan the new school year's rollover and get its preview: per class what happens, per pupil "
        "where they end up. Nothing changes yet. A managed school's provider does its rollover.",
    )
    async def plan_rollover(
        self, info: Info, input: Annotated[RolloverInput, strawberry.argument(description="The plan.")]
    ) -> RolloverPayload:
        try:
            steps = _steps(input)
            async with info.context.scope() as session:
                job = await rollovers.plan_rollover_job(
                    session,
                    school_id=info.context.signed_in().school_id,
                    actor=info.context.actor(),
                    steps=steps,
                    teaching=input.teaching_classes,
                    rotate_login_codes=input.rotate_login_codes,
                )
        except DomainError as error:
            return RolloverPayload(errors=user_errors(error))
        return RolloverPayload(job=RolloverJob.from_row(job))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Apply a previewed rollover, after you type your own password again: checked against the "
        "roster as it is now, then all of it in one transaction, or none of it.",
    )
    async def confirm_rollover(
        self,
        info: Info,
        job_id: Annotated[
            strawberry.ID, strawberry.argument(description="The rollover's id, from planRollover.")
        ],
        current_password: Annotated[
            str,
            strawberry.argument(description="Your own password again: this change needs you to re-enter it."),
        ],
        expected_leavers: Annotated[
            int | None,
            strawberry.argument(
                description="How many pupils leave: needed (and must be right) when more than a tenth of the "
                "school's pupils do, so that a wrong mapping cannot empty the school.",
            ),
        ] = None,
    ) -> RolloverPayload:
        context = info.context
        try:
            target = parse_id(job_id, field="jobId")
            await reauthenticate(await context.database(), context.signed_in(), current_password)
            job = await rollovers.confirm_rollover(
                await context.database(),
                school_id=context.signed_in().school_id,
                actor=context.actor(),
                job_id=target,
                expected_leavers=expected_leavers,
            )
        except DomainError as error:
            return RolloverPayload(errors=user_errors(error))
        return RolloverPayload(job=RolloverJob.from_row(job))

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Undo an applied rollover, after you type your own password again, within the school's "
        "retention of deleted users: its classes, names and memberships go back and its leavers are restored "
        "(login cards stay rotated). Anything changed since is a conflict: refused with the list of them, "
        "unless skipConflicts.",
    )
    async def revert_rollover(
        self,
        info: Info,
        job_id: Annotated[strawberry.ID, strawberry.argument(description="The rollover's id.")],
        current_password: Annotated[
            str,
            strawberry.argument(description="Your own password again: this change needs you to re-enter it."),
        ],
        skip_conflicts: Annotated[
            bool,
            strawberry.argument(
                description="Revert everything but the conflicts (listed on the job), instead of refusing.",
            ),
        ] = False,
    ) -> RolloverPayload:
        context = info.context
        try:
            target = parse_id(job_id, field="jobId")
            await reauthenticate(await context.database(), context.signed_in(), current_password)
            job = await rollovers.revert_rollover(
                await context.database(),
                school_id=context.signed_in().school_id,
                actor=context.actor(),
                job_id=target,
                skip_conflicts=skip_conflicts,
            )
        except DomainError as error:
            return RolloverPayload(errors=user_errors(error))
        return RolloverPayload(job=RolloverJob.from_row(job))
