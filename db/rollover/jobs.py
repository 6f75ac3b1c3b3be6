"""A rollover as a stored job: planned (a preview; nothing changes), confirmed (applied whole, in ONE
transaction), and reverted (undone whole, or all but what changed since).

The work is set-based SQL over the school's rows: the pupils' outcomes, the memberships removed and added,
the leavers and the rotated cards are each one statement whatever the school's size, and no pupil is loaded
into Python, so memory stays flat in the number of pupils. Every write is in the transaction bound to the
actor (`school_scope(db, school_id, actor)`), so the change feed's triggers record it; the audit events are
written beside it.

Simultaneous renames. The class name index (`uq_classes_school_id_kind_name_key`) is a plain unique index,
checked row by row and not deferrable; P4 renamed P5 while P5 is renamed P6 would trip it halfway through in
one order or the other. So the renames take two statements: every renamed class's key first moves to a key
no name can have (a control character, then the class's id), then every one gets its new name. Nothing
outside the transaction ever sees the keys in between. The index stays what it is for every other writer,
and the end state is still checked by it: a name taken by a concurrent transaction fails the apply whole.

Undo. The apply records every membership it removed (its row as it was) and added (`rollover_memberships`),
where each pupil went and each leaver's version afterwards (`rollover_pupils`), and the classes' names
before and after and the rows of the classes it deleted (`undo`). A revert puts those back exactly, unless
something changed them since (a conflict); login cards rotated by the rollover stay rotated.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.classes import NAME_INDEX
from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem, on_collision, require_batch_size
from db.manage_users import lock_roster
from db.models import (
    ClassKind,
    RolloverJob,
    RolloverOutcome,
    RolloverStatus,
    SchoolClass,
    TeachingAction,
)
from db.names import class_name_key
from db.rollover.plan import ClassAction, ExistingClass, RolloverPlan, Step, plan_rollover
from db.schools import require_manual_school
from db.scope import school_scope

log = logging.getLogger("rollcall.rollover")

# A running rollover is one short transaction; one that has not moved for this long lost its worker.
STALE_ROLLOVER = timedelta(minutes=5)
STALE_REASON = "The server stopped while this rollover was running; nothing was changed. Plan it again."
# More than this share of the school's pupils leaving asks the admin to confirm how many.
LEAVERS_TO_CONFIRM = 0.10
TOTALS = ("moved", "renamed", "leaving", "unchanged")


def _json(value: object) -> str:
    return json.dumps(value, default=str)


# ---- reading the school ----------------------------------------------------------------------------


async def _set_based(session: AsyncSession) -> None:
    """Plan this transaction's statements as the bulk work they are: hash joins, never a nested loop. Right
    after a big import the table statistics can still say a school is tiny, and a nested loop over every
    pupil for every membership then takes seconds where a hash join takes milliseconds."""
    await session.execute(text("SET LOCAL enable_nestloop = off"))


async def _classes(session: AsyncSession, school_id: uuid.UUID, *, lock: bool = False) -> list[SchoolClass]:
    """Every class of the school; locked FOR UPDATE in id order when `lock` (as every class change locks a
    class before its users, so none of them can deadlock with a rollover)."""
    query = select(SchoolClass).where(SchoolClass.school_id == school_id).order_by(SchoolClass.id)
    if lock:
        query = query.with_for_update()
    return list((await session.execute(query)).scalars())


async def _active_pupils(session: AsyncSession, school_id: uuid.UUID) -> tuple[int, dict[uuid.UUID, int]]:
    """How many active pupils the school has, and how many each registration class has."""
    rows = await session.execute(
        text("""
        SELECT m.class_id, count(*) FROM users u
        LEFT JOIN class_memberships m
               ON m.school_id = u.school_id AND m.user_id = u.id AND m.kind = 'REGISTRATION'
        WHERE u.school_id = :school AND u.type = 'PUPIL' AND u.deleted_at IS NULL
        GROUP BY m.class_id
        """),
        {"school": school_id},
    )
    counts = {class_id: count for class_id, count in rows}
    return sum(counts.values()), {k: v for k, v in counts.items() if k is not None}


def _plan(classes: Sequence[SchoolClass], steps: Sequence[Step], teaching: TeachingAction) -> RolloverPlan:
    return plan_rollover([ExistingClass(c.id, c.name, c.kind) for c in classes], steps, teaching)


def _leavers_problem(leaving: int, pupils: int, expected: int | None) -> Problem | None:
    """A plan that makes more than a tenth of the pupils leave is confirmed with the number leaving."""
    if leaving <= pupils * LEAVERS_TO_CONFIRM or expected == leaving:
        return None
    asked = "" if expected is None else f" You said {expected}."
    return Problem(
        ErrorCode.LEAVERS_NOT_CONFIRMED,
        f"This rollover makes {leaving} of the school's {pupils} pupils leave.{asked} "
        "Check the classes that LEAVE, then confirm again with expectedLeavers set to that number.",
        "expectedLeavers",
    )


# ---- what the plan does to each class and pupil -------------------------------------------------------


def _outcomes_json(plan: RolloverPlan, ids: dict[str, uuid.UUID]) -> str:
    """The registration classes that are not KEEP, with where their pupils end up (new classes by `ids`)."""
    rows = []
    for class_id, (outcome, target) in plan.pupil_outcomes().items():
        to_id = None if target is None else (target.class_id or ids.get(target.target_key or ""))
        rows.append(
            {
                "class_id": str(class_id),
                "outcome": outcome.value,
                "to_id": str(to_id) if to_id else None,
                "to_name": None if target is None else target.final_name,
            }
        )
    return _json(rows)


_WRITE_PUPILS = text("""
INSERT INTO rollover_pupils
    (school_id, job_id, user_id, outcome, from_class_id, from_class_name, to_class_id, to_class_name)
SELECT u.school_id, :job, u.id, coalesce(v.outcome, 'UNCHANGED'), m.class_id, c.name,
       CASE WHEN v.outcome IS NULL THEN m.class_id ELSE v.to_id END,
       CASE WHEN v.outcome IS NULL THEN c.name ELSE v.to_name END
FROM users u
LEFT JOIN class_memberships m ON m.school_id = u.school_id AND m.user_id = u.id AND m.kind = 'REGISTRATION'
LEFT JOIN classes c ON c.school_id = m.school_id AND c.id = m.class_id
LEFT JOIN jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS v(class_id uuid, outcome text, to_id uuid, to_name text)
       ON v.class_id = m.class_id
WHERE u.school_id = :school AND u.type = 'PUPIL' AND u.deleted_at IS NULL
""")


async def _write_pupils(
    session: AsyncSession,
    school_id: uuid.UUID,
    job_id: uuid.UUID,
    plan: RolloverPlan,
    ids: dict[str, uuid.UUID],
) -> dict[str, int]:
    """Where each active pupil ends up, stored for the job (replacing what it had); the totals."""
    await session.execute(
        text("DELETE FROM rollover_pupils WHERE school_id = :school AND job_id = :job"),
        {"school": school_id, "job": job_id},
    )
    await session.execute(
        _WRITE_PUPILS, {"school": school_id, "job": job_id, "outcomes": _outcomes_json(plan, ids)}
    )
    counted: dict[str, int] = dict(
        (
            await session.execute(
                text(
                    "SELECT outcome, count(*) FROM rollover_pupils WHERE school_id = :school AND job_id = :job "
                    "GROUP BY outcome"
                ),
                {"school": school_id, "job": job_id},
            )
        ).all()
    )
    return {name: int(counted.get(name.upper(), 0)) for name in TOTALS}


def _class_entries(
    plan: RolloverPlan, counts: dict[uuid.UUID, int], ids: dict[str, uuid.UUID]
) -> list[dict[str, Any]]:
    """Per class: what happens to it, and its active pupils now and after."""
    outcomes = plan.pupil_outcomes()
    finals = plan.by_key()
    after: Counter[str] = Counter()
    for planned in plan.classes:
        if planned.kind != ClassKind.REGISTRATION or planned.class_id is None:
            continue
        _, target = outcomes.get(planned.class_id, (RolloverOutcome.UNCHANGED, planned))
        if target is not None and (name := target.final_name) is not None:
            after[class_name_key(name)] += counts.get(planned.class_id, 0)
    entries = []
    for planned in plan.classes:
        class_id = planned.class_id or ids.get(planned.target_key or "")
        target = finals.get(planned.target_key or "") if planned.action == ClassAction.MOVE_TO else None
        target_id = (target.class_id or ids.get(target.target_key or "")) if target is not None else None
        now = counts.get(planned.class_id, 0) if planned.class_id else 0
        final = planned.final_name
        if planned.kind == ClassKind.REGISTRATION:
            later = after[class_name_key(final)] if final is not None else 0
        else:
            later = now if planned.action == ClassAction.KEEP else 0
        entries.append(
            {
                "class_id": str(class_id) if class_id else None,
                "name": planned.name,
                "kind": planned.kind.value,
                "action": planned.action.value,
                "new_name": planned.new_name,
                "target_class_id": str(target_id) if target_id else None,
                "target_class_name": target.final_name if target is not None else None,
                "pupils": now,
                "pupils_after": later,
            }
        )
    return entries


async def _teaching_pupils(session: AsyncSession, school_id: uuid.UUID) -> dict[uuid.UUID, int]:
    rows = await session.execute(
        text("""
        SELECT m.class_id, count(*) FROM class_memberships m
        JOIN users u ON u.school_id = m.school_id AND u.id = m.user_id
        WHERE m.school_id = :school AND m.kind = 'TEACHING' AND u.type = 'PUPIL' AND u.deleted_at IS NULL
        GROUP BY m.class_id
        """),
        {"school": school_id},
    )
    return {class_id: count for class_id, count in rows}


# ---- plan (the preview) ------------------------------------------------------------------------------


def _refused(plan: RolloverPlan) -> DomainError:
    return DomainError(*plan.problems)


async def plan_rollover_job(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    steps: Sequence[Step],
    teaching: TeachingAction,
    rotate_login_codes: bool,
) -> RolloverJob:
    """Check the plan against the school's classes and store its preview; the roster does not change."""
    await require_manual_school(session, school_id)
    require_batch_size(len(steps), field="registrationClasses", things="classes")
    await _set_based(session)
    classes = await _classes(session, school_id)
    plan = _plan(classes, steps, teaching)
    if plan.problems:
        raise _refused(plan)
    pupils, counts = await _active_pupils(session, school_id)
    job = RolloverJob(
        school_id=school_id,
        id=uuid.uuid4(),
        created_by=actor.id,
        status=RolloverStatus.PREVIEW,
        teaching_action=teaching,
        rotate_login_codes=rotate_login_codes,
        steps=[step.to_json() for step in steps],
        processed=0,
    )
    session.add(job)
    await session.flush()
    totals = await _write_pupils(session, school_id, job.id, plan, {})
    job.totals = totals
    job.leaving = totals["leaving"]
    job.pupils = pupils
    job.total = pupils
    job.classes = _class_entries(plan, {**counts, **await _teaching_pupils(session, school_id)}, {})
    await session.flush()
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.ROLLOVER_PLANNED,
        summary={"job_id": str(job.id), **totals},
    )
    await session.refresh(job)
    return job


async def get_rollover_job(
    session: AsyncSession, *, school_id: uuid.UUID, job_id: uuid.UUID
) -> RolloverJob | None:
    """The job; one left RUNNING by a worker that died is failed as it is read."""
    await session.execute(
        update(RolloverJob)
        .where(
            RolloverJob.school_id == school_id,
            RolloverJob.status == RolloverStatus.RUNNING,
            RolloverJob.updated_at < func.now() - STALE_ROLLOVER,
        )
        .values(status=RolloverStatus.FAILED, failure_reason=STALE_REASON, updated_at=func.now())
    )
    return (
        await session.execute(
            select(RolloverJob).where(RolloverJob.school_id == school_id, RolloverJob.id == job_id)
        )
    ).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class PupilLine:
    user_id: uuid.UUID
    username: str | None  # None once the pupil is purged
    first_name: str | None
    surname: str | None
    outcome: RolloverOutcome
    from_class_id: uuid.UUID | None
    from_class_name: str | None
    to_class_id: uuid.UUID | None
    to_class_name: str | None


async def job_pupils(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    job_id: uuid.UUID,
    outcome: RolloverOutcome | None,
    first: int,
    offset: int,
) -> list[PupilLine]:
    """A page of the job's pupils, by username, optionally only those of one outcome."""
    rows = await session.execute(
        text("""
        SELECT p.user_id, u.username, u.first_name, u.surname, p.outcome, p.from_class_id, p.from_class_name,
               p.to_class_id, p.to_class_name
        FROM rollover_pupils p LEFT JOIN users u ON u.school_id = p.school_id AND u.id = p.user_id
        WHERE p.school_id = :school AND p.job_id = :job AND (CAST(:outcome AS text) IS NULL OR p.outcome = :outcome)
        ORDER BY lower(u.username), p.user_id
        LIMIT :first OFFSET :offset
        """),
        {
            "school": school_id,
            "job": job_id,
            "outcome": outcome.value if outcome else None,
            "first": max(0, min(first, 5000)),
            "offset": max(offset, 0),
        },
    )
    return [
        PupilLine(
            user_id=row[0],
            username=row[1],
            first_name=row[2],
            surname=row[3],
            outcome=RolloverOutcome(row[4]),
            from_class_id=row[5],
            from_class_name=row[6],
            to_class_id=row[7],
            to_class_name=row[8],
        )
        for row in rows
    ]


# ---- confirm (the apply) ------------------------------------------------------------------------------


class _NoLongerApplies(DomainError):
    """The preview cannot be applied any more: the job fails."""


def _not_confirmable(message: str, *problems: Problem) -> DomainError:
    return DomainError(Problem(ErrorCode.ROLLOVER_NOT_CONFIRMABLE, message, "jobId"), *problems)


async def _locked_job(session: AsyncSession, school_id: uuid.UUID, job_id: uuid.UUID) -> RolloverJob:
    job = (
        await session.execute(
            select(RolloverJob)
            .where(RolloverJob.school_id == school_id, RolloverJob.id == job_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if job is None:
        raise DomainError(Problem(ErrorCode.NOT_FOUND, f"No rollover has the id {job_id}.", "jobId"))
    return job


async def _checked_plan(
    session: AsyncSession, school_id: uuid.UUID, job: RolloverJob, *, lock: bool
) -> tuple[list[SchoolClass], RolloverPlan]:
    classes = await _classes(session, school_id, lock=lock)
    plan = _plan(classes, [Step.from_json(entry) for entry in job.steps], job.teaching_action)
    if plan.problems:
        raise _NoLongerApplies(
            Problem(
                ErrorCode.ROLLOVER_NOT_CONFIRMABLE,
                "The classes changed since the preview and this plan no longer applies; plan the rollover again.",
                "jobId",
            ),
            *plan.problems,
        )
    return classes, plan


async def confirm_rollover(
    db: Database,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    job_id: uuid.UUID,
    expected_leavers: int | None,
) -> RolloverJob:
    """Apply a previewed rollover (the caller has re-authenticated): all of it in one transaction, or none.
    Refused, and left a PREVIEW, while the number leaving needs confirming; failed when the classes changed
    so that the plan no longer applies."""
    try:
        async with school_scope(db, school_id) as session:
            await require_manual_school(session, school_id)
            await _set_based(session)
            job = await _locked_job(session, school_id, job_id)
            if job.status != RolloverStatus.PREVIEW:
                raise _not_confirmable(
                    f"This rollover is {job.status.value.lower()}; a rollover is applied at most once."
                )
            if (await session.execute(select(func.now()))).scalar_one() >= job.expires_at:
                raise _not_confirmable("This preview is more than a day old; plan the rollover again.")
            await _checked_plan(session, school_id, job, lock=False)
            pupils, _ = await _active_pupils(session, school_id)
            leaving = await _leaving_now(session, school_id, job)
            if problem := _leavers_problem(leaving, pupils, expected_leavers):
                raise DomainError(problem)
            job.status, job.processed, job.updated_at = RolloverStatus.RUNNING, 0, func.now()
    except _NoLongerApplies as error:
        await _fail(db, school_id, job_id, error.problems[0].message)
        raise
    try:
        async with school_scope(db, school_id, actor) as session:
            return await _apply(session, school_id, actor, job_id, expected_leavers)
    except DomainError as error:
        await _fail(db, school_id, job_id, error.problems[0].message)
        raise
    except Exception:
        log.exception("rollover %s failed", job_id)
        reason = (
            "The rollover failed and nothing was changed; try again, or ask for help if it keeps failing."
        )
        await _fail(db, school_id, job_id, reason)
        raise DomainError(Problem(ErrorCode.ROLLOVER_FAILED, reason, "jobId")) from None


async def _leaving_now(session: AsyncSession, school_id: uuid.UUID, job: RolloverJob) -> int:
    """How many active pupils are in the classes that LEAVE, as the roster is now."""
    leaving = [entry["class_id"] for entry in job.steps if entry["action"] == "LEAVE"]
    if not leaving:
        return 0
    return int(
        (
            await session.execute(
                text("""
                SELECT count(*) FROM users u JOIN class_memberships m
                  ON m.school_id = u.school_id AND m.user_id = u.id AND m.kind = 'REGISTRATION'
                WHERE u.school_id = :school AND u.type = 'PUPIL' AND u.deleted_at IS NULL
                  AND m.class_id = ANY(CAST(:classes AS uuid[]))
                """),
                {"school": school_id, "classes": leaving},
            )
        ).scalar_one()
    )


async def _fail(db: Database, school_id: uuid.UUID, job_id: uuid.UUID, reason: str) -> None:
    """Record the failure; if the database is gone too, the job is failed when it is next read."""
    try:
        async with school_scope(db, school_id) as session:
            await session.execute(
                update(RolloverJob)
                .where(
                    RolloverJob.school_id == school_id,
                    RolloverJob.id == job_id,
                    RolloverJob.status.in_([RolloverStatus.PREVIEW, RolloverStatus.RUNNING]),
                )
                .values(status=RolloverStatus.FAILED, failure_reason=reason, updated_at=func.now())
            )
    except (SQLAlchemyError, OSError):
        log.warning("could not mark rollover %s FAILED", job_id, exc_info=True)


def _class_row(school_class: SchoolClass) -> dict[str, Any]:
    return {
        "id": str(school_class.id),
        "name": school_class.name,
        "name_key": school_class.name_key,
        "kind": school_class.kind.value,
        "created_at": school_class.created_at.isoformat(),
        "external_id": school_class.external_id,
        "provisioned_at": school_class.provisioned_at.isoformat() if school_class.provisioned_at else None,
    }


_REMOVE_MEMBERSHIPS = text("""
INSERT INTO rollover_memberships (school_id, job_id, change, class_id, user_id, kind, created_at)
SELECT m.school_id, :job, 'REMOVED', m.class_id, m.user_id, m.kind, m.created_at
FROM class_memberships m
WHERE m.school_id = :school AND (
    m.class_id = ANY(CAST(:doomed AS uuid[]))
    OR (m.class_id = ANY(CAST(:emptied AS uuid[])) AND EXISTS (
        SELECT FROM users u WHERE u.school_id = m.school_id AND u.id = m.user_id AND u.type = 'PUPIL'))
    OR (m.kind = 'REGISTRATION' AND EXISTS (
        SELECT FROM rollover_pupils p
        WHERE p.school_id = m.school_id AND p.job_id = :job AND p.user_id = m.user_id
          AND p.outcome = 'MOVED' AND p.from_class_id = m.class_id))
)
""")
_DELETE_REMOVED = text("""
DELETE FROM class_memberships m USING rollover_memberships r
WHERE r.school_id = :school AND r.job_id = :job AND r.change = 'REMOVED'
  AND m.school_id = r.school_id AND m.class_id = r.class_id AND m.user_id = r.user_id
""")
_ADD_MEMBERSHIPS = text("""
INSERT INTO rollover_memberships (school_id, job_id, change, class_id, user_id, kind, created_at)
SELECT p.school_id, :job, 'ADDED', p.to_class_id, p.user_id, 'REGISTRATION', now()
FROM rollover_pupils p WHERE p.school_id = :school AND p.job_id = :job AND p.outcome = 'MOVED'
""")
_INSERT_ADDED = text("""
INSERT INTO class_memberships (school_id, class_id, user_id, kind, created_at)
SELECT r.school_id, r.class_id, r.user_id, r.kind, r.created_at FROM rollover_memberships r
WHERE r.school_id = :school AND r.job_id = :job AND r.change = 'ADDED'
""")
_TEMPORARY_KEYS = text("""
UPDATE classes SET name_key = chr(1) || id::text
WHERE school_id = :school AND id = ANY(CAST(:ids AS uuid[]))
""")
_RENAME = text("""
UPDATE classes c SET name = v.name, name_key = v.key
FROM jsonb_to_recordset(CAST(:renames AS jsonb)) AS v(id uuid, name text, key text)
WHERE c.school_id = :school AND c.id = v.id
""")
_LEAVE = text("""
UPDATE users u SET deleted_at = now(), deleted_by = :actor, version = u.version + 1, updated_at = now()
FROM rollover_pupils p
WHERE p.school_id = :school AND p.job_id = :job AND p.outcome = 'LEAVING'
  AND u.school_id = p.school_id AND u.id = p.user_id
""")
_END_LEAVERS_SESSIONS = text("""
UPDATE sessions s SET revoked_at = now() FROM rollover_pupils p
WHERE p.school_id = :school AND p.job_id = :job AND p.outcome = 'LEAVING'
  AND s.school_id = p.school_id AND s.user_id = p.user_id AND s.revoked_at IS NULL
""")
# Every pupil of the plan when cards rotate; else the leavers only (a deletion always rotates a pupil's cards).
_ROTATE = text("""
UPDATE users u SET login_code_version = u.login_code_version + 1 FROM rollover_pupils p
WHERE p.school_id = :school AND p.job_id = :job AND (:everyone OR p.outcome = 'LEAVING')
  AND u.school_id = p.school_id AND u.id = p.user_id
""")
_END_QR_SESSIONS = text("""
UPDATE sessions s SET revoked_at = now() FROM rollover_pupils p
WHERE p.school_id = :school AND p.job_id = :job AND (:everyone OR p.outcome = 'LEAVING')
  AND s.school_id = p.school_id AND s.user_id = p.user_id AND s.revoked_at IS NULL
  AND s.sign_in_method = 'qr'
""")
_VERSIONS_AFTER = text("""
UPDATE rollover_pupils p SET version_after = u.version FROM users u
WHERE p.school_id = :school AND p.job_id = :job AND u.school_id = p.school_id AND u.id = p.user_id
""")
_AUDIT = """
INSERT INTO audit_events (school_id, actor_id, actor_label, action, target_user_ids, summary, request_id)
SELECT :school, :actor_id, :actor_label, :action,
       coalesce((SELECT array_agg(t.user_id ORDER BY t.user_id) FROM ({targets}) t), '{{}}'),
       CAST(:summary AS jsonb), :request_id
"""
_AUDIT_MOVES = text("""
INSERT INTO audit_events (school_id, actor_id, actor_label, action, target_user_ids, summary, request_id)
SELECT p.school_id, :actor_id, :actor_label, 'class.members_moved', array_agg(p.user_id ORDER BY p.user_id),
       jsonb_build_object('class_id', p.to_class_id, 'name', max(p.to_class_name), 'kind', 'REGISTRATION',
                          'via', 'rollover', 'job_id', CAST(:job_text AS text),
                          'previous_class_ids', jsonb_object_agg(p.user_id, p.from_class_id)),
       :request_id
FROM rollover_pupils p WHERE p.school_id = :school AND p.job_id = :job AND p.outcome = 'MOVED'
GROUP BY p.school_id, p.to_class_id
""")


async def _audit_targets(
    session: AsyncSession,
    actor: Actor,
    school_id: uuid.UUID,
    action: str,
    summary: dict[str, Any],
    targets: str,
    params: dict[str, Any],
) -> None:
    """One audit event whose targets are the `user_id`s the `targets` query selects (in the database)."""
    await session.execute(
        text(_AUDIT.format(targets=targets)),
        {
            **params,
            "school": school_id,
            "actor_id": actor.id,
            "actor_label": actor.label,
            "action": action,
            "summary": _json(summary),
            "request_id": actor.request_id,
        },
    )


def _actor_params(actor: Actor) -> dict[str, Any]:
    return {"actor_id": actor.id, "actor_label": actor.label, "request_id": actor.request_id}


async def _lock_pupils(session: AsyncSession, school_id: uuid.UUID) -> None:
    """Lock every active pupil, in id order, without bringing them into Python."""
    await session.execute(
        text("""
        SELECT count(*) FROM (
            SELECT 1 FROM users WHERE school_id = :school AND type = 'PUPIL' AND deleted_at IS NULL
            ORDER BY id FOR UPDATE) locked
        """),
        {"school": school_id},
    )


async def _apply(
    session: AsyncSession, school_id: uuid.UUID, actor: Actor, job_id: uuid.UUID, expected_leavers: int | None
) -> RolloverJob:
    await require_manual_school(session, school_id)
    await _set_based(session)
    await lock_roster(session, school_id)
    job = await _locked_job(session, school_id, job_id)
    if job.status != RolloverStatus.RUNNING:
        raise _not_confirmable(
            f"This rollover is {job.status.value.lower()}; a rollover is applied at most once."
        )
    classes, plan = await _checked_plan(session, school_id, job, lock=True)
    await _lock_pupils(session, school_id)
    pupils, counts = await _active_pupils(session, school_id)
    teaching_counts = await _teaching_pupils(session, school_id)
    ids = {planned.target_key or "": uuid.uuid4() for planned in plan.created()}
    totals = await _write_pupils(session, school_id, job_id, plan, ids)
    if problem := _leavers_problem(totals["leaving"], pupils, expected_leavers):
        raise DomainError(problem)
    by_id = {school_class.id: school_class for school_class in classes}
    doomed = [
        p.class_id for p in plan.classes if p.action in (ClassAction.LEAVE, ClassAction.DELETE) and p.class_id
    ]
    emptied = [p.class_id for p in plan.classes if p.action == ClassAction.EMPTY and p.class_id]
    renamed = [p for p in plan.classes if p.action == ClassAction.RENAME and p.class_id]
    params: dict[str, Any] = {"school": school_id, "job": job_id}
    undo = {
        "renamed": [{"id": str(p.class_id), "from": p.name, "to": p.new_name} for p in renamed],
        "created": [{"id": str(ids[p.target_key or ""]), "name": p.name} for p in plan.created()],
        "deleted": [_class_row(by_id[class_id]) for class_id in doomed],
    }
    # Memberships out: of the classes that go, the pupils of the teaching classes emptied, the movers' own.
    await session.execute(
        _REMOVE_MEMBERSHIPS,
        {**params, "doomed": [str(i) for i in doomed], "emptied": [str(i) for i in emptied]},
    )
    await session.execute(_DELETE_REMOVED, params)
    for class_id in doomed:
        school_class = by_id[class_id]
        await _audit_targets(
            session,
            actor,
            school_id,
            "class.deleted",
            {
                "class_id": str(class_id),
                "name": school_class.name,
                "kind": school_class.kind.value,
                "via": "rollover",
            },
            "SELECT user_id FROM rollover_memberships WHERE school_id = :school AND job_id = :job "
            "AND change = 'REMOVED' AND class_id = :class",
            {**params, "class": class_id},
        )
    for class_id in emptied:
        school_class = by_id[class_id]
        await _audit_targets(
            session,
            actor,
            school_id,
            "class.members_removed",
            {
                "class_id": str(class_id),
                "name": school_class.name,
                "kind": school_class.kind.value,
                "via": "rollover",
            },
            "SELECT user_id FROM rollover_memberships WHERE school_id = :school AND job_id = :job "
            "AND change = 'REMOVED' AND class_id = :class",
            {**params, "class": class_id},
        )
    if doomed:
        await session.execute(
            text("DELETE FROM classes WHERE school_id = :school AND id = ANY(CAST(:ids AS uuid[]))"),
            {"school": school_id, "ids": [str(i) for i in doomed]},
        )
    # Renames, all at once (see the module's docstring), then the classes the moves create.
    await _rename_all(
        session, school_id, [(p.class_id, p.new_name) for p in renamed if p.class_id and p.new_name]
    )
    for planned in renamed:
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.CLASS_RENAMED,
            summary={
                "class_id": str(planned.class_id),
                "kind": planned.kind.value,
                "from": planned.name,
                "to": planned.new_name,
                "via": "rollover",
            },
        )
    created = plan.created()
    if created:
        session.add_all(
            SchoolClass(
                school_id=school_id, id=ids[p.target_key or ""], name=p.name, kind=ClassKind.REGISTRATION
            )
            for p in created
        )
        with on_collision({NAME_INDEX: lambda: _name_taken_meanwhile()}):
            await session.flush()
        for planned in created:
            await audit.record_by(
                session,
                actor,
                school_id=school_id,
                action=AuditAction.CLASS_CREATED,
                summary={
                    "class_id": str(ids[planned.target_key or ""]),
                    "name": planned.name,
                    "kind": ClassKind.REGISTRATION.value,
                    "via": "rollover",
                },
            )
    # Memberships in: the movers, into their new classes.
    await session.execute(_ADD_MEMBERSHIPS, params)
    await session.execute(_INSERT_ADDED, params)
    await session.execute(_AUDIT_MOVES, {**params, **_actor_params(actor), "job_text": str(job_id)})
    # The leavers leave (soft-deleted, as deleteUsers does), then the cards rotate.
    leaving = totals["leaving"]
    if leaving:
        await session.execute(_LEAVE, {**params, "actor": actor.id})
        await session.execute(_END_LEAVERS_SESSIONS, params)
        await _audit_targets(
            session,
            actor,
            school_id,
            "users.deleted",
            {"count": leaving, "via": "rollover"},
            "SELECT user_id FROM rollover_pupils WHERE school_id = :school AND job_id = :job "
            "AND outcome = 'LEAVING'",
            params,
        )
    everyone = job.rotate_login_codes
    if everyone or leaving:
        await session.execute(_ROTATE, {**params, "everyone": everyone})
        await session.execute(_END_QR_SESSIONS, {**params, "everyone": everyone})
        await _audit_targets(
            session,
            actor,
            school_id,
            "login_codes.rotated",
            {"via": "rollover"},
            "SELECT user_id FROM rollover_pupils WHERE school_id = :school AND job_id = :job "
            "AND (:everyone OR outcome = 'LEAVING')",
            {**params, "everyone": everyone},
        )
    await session.execute(_VERSIONS_AFTER, params)
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.ROLLOVER_APPLIED,
        summary={"job_id": str(job_id), **totals, "rotated_login_codes": everyone},
    )
    job.status = RolloverStatus.SUCCEEDED
    job.totals, job.leaving, job.pupils, job.total, job.processed = totals, leaving, pupils, pupils, pupils
    job.classes = _class_entries(plan, {**counts, **teaching_counts}, ids)
    job.undo = undo
    job.applied_at = job.updated_at = func.now()
    await session.flush()
    await session.refresh(job)
    return job


def _name_taken_meanwhile() -> DomainError:
    return DomainError(
        Problem(
            ErrorCode.CLASS_NAME_TAKEN,
            "Someone gave a class one of this rollover's names while it ran; nothing was changed. "
            "Plan the rollover again.",
            "jobId",
        )
    )


async def _rename_all(
    session: AsyncSession, school_id: uuid.UUID, renames: Sequence[tuple[uuid.UUID, str]]
) -> None:
    """Give each class its new name, all at once: keys out of the way first, then the names."""
    if not renames:
        return
    await session.execute(_TEMPORARY_KEYS, {"school": school_id, "ids": [str(i) for i, _ in renames]})
    with on_collision({NAME_INDEX: _name_taken_meanwhile}):
        await session.execute(
            _RENAME,
            {
                "school": school_id,
                "renames": _json(
                    [{"id": str(i), "name": name, "key": class_name_key(name)} for i, name in renames]
                ),
            },
        )


# ---- revert ---------------------------------------------------------------------------------------------


_USER_CONFLICTS = text("""
SELECT c.user_id, c.reason, c.username FROM (
    SELECT p.user_id, u.username, CASE
        WHEN u.id IS NULL THEN 'gone'
        WHEN u.deleted_at IS NOT NULL THEN 'deleted'
        WHEN NOT EXISTS (
            SELECT FROM class_memberships m JOIN rollover_memberships r
              ON r.school_id = m.school_id AND r.class_id = m.class_id AND r.user_id = m.user_id
             AND r.created_at = m.created_at
            WHERE r.school_id = p.school_id AND r.job_id = p.job_id AND r.change = 'ADDED'
              AND r.user_id = p.user_id) THEN 'moved'
        WHEN NOT EXISTS (SELECT FROM classes k WHERE k.school_id = p.school_id AND k.id = p.from_class_id)
            THEN 'class_gone'
        END AS reason
    FROM rollover_pupils p LEFT JOIN users u ON u.school_id = p.school_id AND u.id = p.user_id
    WHERE p.school_id = :school AND p.job_id = :job AND p.outcome = 'MOVED'
    UNION ALL
    SELECT p.user_id, u.username, CASE
        WHEN u.id IS NULL THEN 'gone'
        WHEN u.deleted_at IS NULL THEN 'restored'
        WHEN u.version IS DISTINCT FROM p.version_after THEN 'changed'
        WHEN EXISTS (SELECT FROM users o WHERE o.school_id = u.school_id AND o.deleted_at IS NULL
                     AND lower(o.username) = lower(u.username)) THEN 'username'
        WHEN u.email IS NOT NULL AND EXISTS (
            SELECT FROM users o WHERE o.school_id = u.school_id AND o.deleted_at IS NULL
               AND lower(o.email) = lower(u.email)) THEN 'email'
        END
    FROM rollover_pupils p LEFT JOIN users u ON u.school_id = p.school_id AND u.id = p.user_id
    WHERE p.school_id = :school AND p.job_id = :job AND p.outcome = 'LEAVING'
    UNION ALL
    SELECT r.user_id, u.username, CASE
        WHEN u.id IS NULL THEN 'gone'
        WHEN r.kind = 'REGISTRATION' AND EXISTS (
            SELECT FROM class_memberships m
            WHERE m.school_id = r.school_id AND m.user_id = r.user_id AND m.kind = 'REGISTRATION'
              AND m.class_id <> r.class_id
              AND NOT EXISTS (
                  SELECT FROM rollover_memberships a
                  WHERE a.school_id = m.school_id AND a.job_id = r.job_id AND a.change = 'ADDED'
                    AND a.user_id = m.user_id AND a.class_id = m.class_id AND a.created_at = m.created_at))
            THEN 'registration'
        END
    FROM rollover_memberships r LEFT JOIN users u ON u.school_id = r.school_id AND u.id = r.user_id
    WHERE r.school_id = :school AND r.job_id = :job AND r.change = 'REMOVED'
) c WHERE c.reason IS NOT NULL
ORDER BY lower(c.username), c.user_id
""")

_REASONS = {
    "gone": "{who} no longer exists (purged since the rollover).",
    "deleted": "{who} was deleted since the rollover.",
    "moved": "{who} was moved to another class since the rollover.",
    "class_gone": "{who}'s class before the rollover was deleted since.",
    "restored": "{who} was restored since the rollover.",
    "changed": "{who} was changed since the rollover.",
    "username": "{who}'s username was given to someone else since the rollover.",
    "email": "{who}'s email address was given to someone else since the rollover.",
    "registration": "{who} is in another registration class now.",
}


@dataclass(frozen=True, slots=True)
class _Conflict:
    message: str
    user_id: uuid.UUID | None = None
    class_id: uuid.UUID | None = None

    def problem(self) -> Problem:
        return Problem(ErrorCode.REVERT_CONFLICT, self.message, "jobId", self.user_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "user_id": str(self.user_id) if self.user_id else None,
            "class_id": str(self.class_id) if self.class_id else None,
        }


async def _user_conflicts(session: AsyncSession, school_id: uuid.UUID, job_id: uuid.UUID) -> list[_Conflict]:
    found: dict[uuid.UUID, _Conflict] = {}
    for user_id, reason, username in await session.execute(
        _USER_CONFLICTS, {"school": school_id, "job": job_id}
    ):
        who = f"'{username}'" if username else f"The user {user_id}"
        found.setdefault(user_id, _Conflict(_REASONS[reason].format(who=who), user_id=user_id))
    return list(found.values())


async def _class_conflicts(
    session: AsyncSession,
    school_id: uuid.UUID,
    job: RolloverJob,
    classes: Sequence[SchoolClass],
    conflicted_users: set[uuid.UUID],
) -> tuple[list[_Conflict], set[uuid.UUID]]:
    """What stops a class's change being undone, and the ids of the classes whose changes are undone."""
    now = {school_class.id: school_class for school_class in classes}
    conflicts: list[_Conflict] = []
    undoing: set[uuid.UUID] = set()
    for entry in job.undo.get("renamed", []):
        class_id = uuid.UUID(entry["id"])
        current = now.get(class_id)
        if current is None:
            conflicts.append(
                _Conflict(f"The class '{entry['to']}' was deleted since the rollover.", class_id=class_id)
            )
        elif current.name != entry["to"]:
            conflicts.append(
                _Conflict(
                    f"The class '{entry['to']}' was renamed '{current.name}' since the rollover.",
                    class_id=class_id,
                )
            )
        else:
            undoing.add(class_id)
    for entry in job.undo.get("created", []):
        class_id = uuid.UUID(entry["id"])
        current = now.get(class_id)
        if current is None:
            conflicts.append(
                _Conflict(f"The class '{entry['name']}' was deleted since the rollover.", class_id=class_id)
            )
            continue
        if current.name != entry["name"]:
            conflicts.append(
                _Conflict(
                    f"The class '{entry['name']}' was renamed '{current.name}' since the rollover.",
                    class_id=class_id,
                )
            )
            continue
        others = (
            await session.execute(
                text("""
                SELECT count(*) FROM class_memberships m
                WHERE m.school_id = :school AND m.class_id = :class AND (
                    m.user_id = ANY(CAST(:conflicted AS uuid[])) OR NOT EXISTS (
                        SELECT FROM rollover_memberships a
                        WHERE a.school_id = m.school_id AND a.job_id = :job AND a.change = 'ADDED'
                          AND a.class_id = m.class_id AND a.user_id = m.user_id AND a.created_at = m.created_at))
                """),
                {
                    "school": school_id,
                    "class": class_id,
                    "job": job.id,
                    "conflicted": [str(u) for u in conflicted_users],
                },
            )
        ).scalar_one()
        if others:
            conflicts.append(
                _Conflict(
                    f"The class '{entry['name']}' has {others} members the rollover did not put there (or that "
                    "cannot be moved back), so it is not deleted.",
                    class_id=class_id,
                )
            )
            continue
        undoing.add(class_id)
    deleted = {uuid.UUID(entry["id"]): entry for entry in job.undo.get("deleted", [])}
    undoing |= {class_id for class_id in deleted if class_id not in now}
    renamed_back = {uuid.UUID(e["id"]): e["from"] for e in job.undo.get("renamed", [])}
    created = {uuid.UUID(e["id"]) for e in job.undo.get("created", [])}
    # The names after the revert, until no two classes share one: a rename back or a class put back that
    # would take a name someone else holds now is a conflict, and leaves its class as it is.
    while True:
        holders: dict[tuple[str, str], list[uuid.UUID]] = defaultdict(list)
        for class_id, school_class in now.items():
            if class_id in created and class_id in undoing:
                continue
            name = (
                renamed_back[class_id]
                if class_id in renamed_back and class_id in undoing
                else school_class.name
            )
            holders[(school_class.kind.value, class_name_key(name))].append(class_id)
        for class_id, entry in deleted.items():
            if class_id in undoing:
                holders[(entry["kind"], entry["name_key"])].append(class_id)
        clashing = [
            class_id
            for ids in holders.values()
            if len(ids) > 1
            for class_id in ids
            if class_id in undoing and (class_id in renamed_back or class_id in deleted)
        ]
        if not clashing:
            break
        for class_id in clashing:
            undoing.discard(class_id)
            name = renamed_back.get(class_id) or deleted[class_id]["name"]
            conflicts.append(
                _Conflict(
                    f"The name '{name}' was given to another class since the rollover.", class_id=class_id
                )
            )
    return conflicts, undoing


_REVERT_ADDED = text("""
DELETE FROM class_memberships m USING rollover_memberships r
WHERE r.school_id = :school AND r.job_id = :job AND r.change = 'ADDED'
  AND NOT r.user_id = ANY(CAST(:conflicted AS uuid[]))
  AND m.school_id = r.school_id AND m.class_id = r.class_id AND m.user_id = r.user_id
  AND m.created_at = r.created_at
""")
_RECREATE = text("""
INSERT INTO classes (school_id, id, name, name_key, kind, created_at, external_id, provisioned_at)
SELECT :school, v.id, v.name, v.name_key, v.kind, v.created_at, v.external_id, v.provisioned_at
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
  AS v(id uuid, name text, name_key text, kind text, created_at timestamptz, external_id text,
       provisioned_at timestamptz)
""")
_REVERT_REMOVED = text("""
INSERT INTO class_memberships (school_id, class_id, user_id, kind, created_at)
SELECT r.school_id, r.class_id, r.user_id, r.kind, r.created_at FROM rollover_memberships r
WHERE r.school_id = :school AND r.job_id = :job AND r.change = 'REMOVED'
  AND NOT r.user_id = ANY(CAST(:conflicted AS uuid[]))
  AND EXISTS (SELECT FROM classes c WHERE c.school_id = r.school_id AND c.id = r.class_id AND c.kind = r.kind)
  AND EXISTS (SELECT FROM users u WHERE u.school_id = r.school_id AND u.id = r.user_id)
ON CONFLICT DO NOTHING
""")
_RESTORE = text("""
UPDATE users u SET deleted_at = NULL, deleted_by = NULL, version = u.version + 1, updated_at = now()
FROM rollover_pupils p
WHERE p.school_id = :school AND p.job_id = :job AND p.outcome = 'LEAVING'
  AND NOT p.user_id = ANY(CAST(:conflicted AS uuid[]))
  AND u.school_id = p.school_id AND u.id = p.user_id AND u.deleted_at IS NOT NULL
""")


async def revert_rollover(
    db: Database,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    job_id: uuid.UUID,
    skip_conflicts: bool,
) -> RolloverJob:
    """Undo an applied rollover (the caller has re-authenticated), in one transaction: the classes, names and
    memberships it changed, and the pupils it made leave. Anything changed since is a conflict: all of them
    are reported and nothing changes, unless `skip_conflicts`, when everything else is undone."""
    async with school_scope(db, school_id, actor) as session:
        school = await require_manual_school(session, school_id)
        await _set_based(session)
        await lock_roster(session, school_id)
        job = await _locked_job(session, school_id, job_id)
        if job.status != RolloverStatus.SUCCEEDED or job.applied_at is None:
            raise DomainError(
                Problem(
                    ErrorCode.ROLLOVER_NOT_REVERTIBLE,
                    f"This rollover is {job.status.value.lower()}; only an applied rollover can be reverted, once.",
                    "jobId",
                )
            )
        now: datetime = (await session.execute(select(func.now()))).scalar_one()
        if now >= job.applied_at + timedelta(days=school.deleted_user_retention_days):
            raise DomainError(
                Problem(
                    ErrorCode.ROLLOVER_NOT_REVERTIBLE,
                    f"This rollover is older than the school keeps deleted users "
                    f"({school.deleted_user_retention_days} days); it can no longer be reverted.",
                    "jobId",
                )
            )
        classes = await _classes(session, school_id, lock=True)
        await session.execute(
            text("""
            SELECT count(*) FROM (
                SELECT 1 FROM users u WHERE u.school_id = :school AND u.id IN (
                    SELECT user_id FROM rollover_pupils WHERE school_id = :school AND job_id = :job
                    UNION SELECT user_id FROM rollover_memberships WHERE school_id = :school AND job_id = :job)
                ORDER BY u.id FOR UPDATE) locked
            """),
            {"school": school_id, "job": job_id},
        )
        user_conflicts = await _user_conflicts(session, school_id, job_id)
        conflicted = {c.user_id for c in user_conflicts if c.user_id is not None}
        class_conflicts, undoing = await _class_conflicts(session, school_id, job, classes, conflicted)
        conflicts = class_conflicts + user_conflicts
        if conflicts and not skip_conflicts:
            raise DomainError(*(conflict.problem() for conflict in conflicts))
        params: dict[str, Any] = {
            "school": school_id,
            "job": job_id,
            "conflicted": [str(u) for u in conflicted],
        }
        await _undo(session, school_id, actor, job, params, undoing)
        job.status, job.reverted_at, job.updated_at = RolloverStatus.REVERTED, func.now(), func.now()
        job.conflicts = [conflict.to_json() for conflict in conflicts]
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.ROLLOVER_REVERTED,
            summary={"job_id": str(job_id), "skipped": len(conflicts)},
        )
        await session.flush()
        await session.refresh(job)
        return job


async def _undo(
    session: AsyncSession,
    school_id: uuid.UUID,
    actor: Actor,
    job: RolloverJob,
    params: dict[str, Any],
    undoing: set[uuid.UUID],
) -> None:
    by_class = "SELECT user_id FROM rollover_memberships WHERE school_id = :school AND job_id = :job " + (
        "AND change = :change AND class_id = :class AND NOT user_id = ANY(CAST(:conflicted AS uuid[]))"
    )
    added = sorted(
        {
            c
            for (c,) in await session.execute(
                text(
                    "SELECT DISTINCT class_id FROM rollover_memberships WHERE school_id = :school AND job_id = :job AND change = 'ADDED'"
                ),
                params,
            )
        }
    )
    for class_id in added:
        await _audit_targets(
            session,
            actor,
            school_id,
            "class.members_removed",
            {"class_id": str(class_id), "via": "rollover revert", "job_id": str(job.id)},
            by_class,
            {**params, "change": "ADDED", "class": class_id},
        )
    await session.execute(_REVERT_ADDED, params)
    created = [uuid.UUID(e["id"]) for e in job.undo.get("created", []) if uuid.UUID(e["id"]) in undoing]
    if created:
        await session.execute(
            text("DELETE FROM classes WHERE school_id = :school AND id = ANY(CAST(:ids AS uuid[]))"),
            {"school": school_id, "ids": [str(i) for i in created]},
        )
        for entry in job.undo["created"]:
            if uuid.UUID(entry["id"]) in undoing:
                await audit.record_by(
                    session,
                    actor,
                    school_id=school_id,
                    action=AuditAction.CLASS_DELETED,
                    summary={
                        "class_id": entry["id"],
                        "name": entry["name"],
                        "kind": "REGISTRATION",
                        "via": "rollover revert",
                    },
                )
    renames = [
        (uuid.UUID(e["id"]), e["from"]) for e in job.undo.get("renamed", []) if uuid.UUID(e["id"]) in undoing
    ]
    await _rename_all(session, school_id, renames)
    for entry in job.undo.get("renamed", []):
        if uuid.UUID(entry["id"]) in undoing:
            await audit.record_by(
                session,
                actor,
                school_id=school_id,
                action=AuditAction.CLASS_RENAMED,
                summary={
                    "class_id": entry["id"],
                    "kind": "REGISTRATION",
                    "from": entry["to"],
                    "to": entry["from"],
                    "via": "rollover revert",
                },
            )
    recreated = [e for e in job.undo.get("deleted", []) if uuid.UUID(e["id"]) in undoing]
    if recreated:
        with on_collision({NAME_INDEX: _name_taken_meanwhile}):
            await session.execute(_RECREATE, {"school": school_id, "rows": _json(recreated)})
        for entry in recreated:
            await audit.record_by(
                session,
                actor,
                school_id=school_id,
                action=AuditAction.CLASS_CREATED,
                summary={
                    "class_id": entry["id"],
                    "name": entry["name"],
                    "kind": entry["kind"],
                    "via": "rollover revert",
                },
            )
    removed = sorted(
        {
            c
            for (c,) in await session.execute(
                text(
                    "SELECT DISTINCT class_id FROM rollover_memberships WHERE school_id = :school AND job_id = :job AND change = 'REMOVED'"
                ),
                params,
            )
        }
    )
    await session.execute(_REVERT_REMOVED, params)
    for class_id in removed:
        await _audit_targets(
            session,
            actor,
            school_id,
            "class.members_added",
            {"class_id": str(class_id), "via": "rollover revert", "job_id": str(job.id)},
            by_class,
            {**params, "change": "REMOVED", "class": class_id},
        )
    restored = await session.execute(_RESTORE, params)
    if restored.rowcount:  # type: ignore[attr-defined]
        await _audit_targets(
            session,
            actor,
            school_id,
            "users.restored",
            {"count": int(restored.rowcount), "via": "rollover revert"},  # type: ignore[attr-defined]
            "SELECT user_id FROM rollover_pupils WHERE school_id = :school AND job_id = :job "
            "AND outcome = 'LEAVING' AND NOT user_id = ANY(CAST(:conflicted AS uuid[]))",
            params,
        )
