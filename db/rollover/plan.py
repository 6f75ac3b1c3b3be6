"""A rollover's plan, checked as a whole: pure logic over the school's classes, tested without a database.

Every step happens at once. A class's name after the rollover is its new name (RENAME), or its name (KEEP,
MOVE_TO); a LEAVE class is gone (its pupils leave the school and the class is deleted, so its name is free);
a MOVE_TO `targetClassName` is a class the rollover creates. So P4 renamed P5 while P5 is renamed P6 is fine
in any order, and so is a swap; what is refused is a plan whose end state is contradictory: two classes with
one name, a move into a class that is leaving or into itself, a class named twice, or a step that is not
whole. Each problem names the step it is about (`registrationClasses[i]...`).
"""

from __future__ import annotations

import enum
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from db.errors import DomainError, ErrorCode, Problem
from db.models import ClassKind, RolloverOutcome, TeachingAction
from db.names import CLASS_NAME_MAX, class_name_key
from db.users import clean_name


class RolloverAction(enum.StrEnum):
    """What a rollover does to one registration class."""

    KEEP = "KEEP"
    RENAME = "RENAME"
    MOVE_TO = "MOVE_TO"
    LEAVE = "LEAVE"


class ClassAction(enum.StrEnum):
    """What the plan does to a class, of either kind (CREATE: a class the rollover makes)."""

    KEEP = "KEEP"
    RENAME = "RENAME"
    MOVE_TO = "MOVE_TO"
    LEAVE = "LEAVE"
    CREATE = "CREATE"
    EMPTY = "EMPTY"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Step:
    class_id: uuid.UUID
    action: RolloverAction
    new_name: str | None = None
    target_class_id: uuid.UUID | None = None
    target_class_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "class_id": str(self.class_id),
            "action": self.action.value,
            "new_name": self.new_name,
            "target_class_id": str(self.target_class_id) if self.target_class_id else None,
            "target_class_name": self.target_class_name,
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Step:
        return cls(
            class_id=uuid.UUID(entry["class_id"]),
            action=RolloverAction(entry["action"]),
            new_name=entry["new_name"],
            target_class_id=uuid.UUID(entry["target_class_id"]) if entry["target_class_id"] else None,
            target_class_name=entry["target_class_name"],
        )


@dataclass(frozen=True, slots=True)
class ExistingClass:
    id: uuid.UUID
    name: str
    kind: ClassKind


@dataclass(frozen=True, slots=True)
class PlannedClass:
    """One class and what happens to it. `class_id` is None for a class the rollover creates until it is
    applied (the apply gives it its id)."""

    class_id: uuid.UUID | None
    name: str
    kind: ClassKind
    action: ClassAction
    new_name: str | None = None  # RENAME
    target_key: str | None = None  # MOVE_TO: the target's name key after the rollover
    target_class_id: uuid.UUID | None = None  # MOVE_TO an existing class

    @property
    def final_name(self) -> str | None:
        """The class's name once the rollover is applied; None when it is gone."""
        if self.action in (ClassAction.LEAVE, ClassAction.DELETE):
            return None
        return self.new_name if self.action == ClassAction.RENAME else self.name


@dataclass(slots=True)
class RolloverPlan:
    classes: list[PlannedClass] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def by_key(self) -> dict[str, PlannedClass]:
        """Each registration class that exists after the rollover, by its name key then."""
        return {
            class_name_key(name): planned
            for planned in self.classes
            if planned.kind == ClassKind.REGISTRATION and (name := planned.final_name) is not None
        }

    def created(self) -> list[PlannedClass]:
        return [planned for planned in self.classes if planned.action == ClassAction.CREATE]

    def pupil_outcomes(self) -> dict[uuid.UUID, tuple[RolloverOutcome, PlannedClass | None]]:
        """For each registration class that is not KEEP: what happens to its pupils and the class they end
        in (None for leavers)."""
        after = self.by_key()
        outcomes: dict[uuid.UUID, tuple[RolloverOutcome, PlannedClass | None]] = {}
        for planned in self.classes:
            if planned.class_id is None or planned.kind != ClassKind.REGISTRATION:
                continue
            if planned.action == ClassAction.RENAME:
                outcomes[planned.class_id] = (RolloverOutcome.RENAMED, planned)
            elif planned.action == ClassAction.LEAVE:
                outcomes[planned.class_id] = (RolloverOutcome.LEAVING, None)
            elif planned.action == ClassAction.MOVE_TO:
                assert planned.target_key is not None
                outcomes[planned.class_id] = (RolloverOutcome.MOVED, after[planned.target_key])
        return outcomes


def _clean_class_name(raw: str, field: str) -> tuple[str | None, Problem | None]:
    try:
        name = clean_name(raw, field=field, what="A class's name", most=CLASS_NAME_MAX)
    except DomainError as error:
        return None, Problem(error.problems[0].code, error.problems[0].message, field)
    if not name:
        return None, Problem(
            ErrorCode.INVALID_INPUT, f"A class's name is 1 to {CLASS_NAME_MAX} characters.", field
        )
    return name, None


def plan_rollover(
    classes: Sequence[ExistingClass], steps: Sequence[Step], teaching: TeachingAction
) -> RolloverPlan:
    """The plan for these steps over these classes (registration classes not named are KEEP), with every
    problem found; a plan with problems is not applied."""
    plan = RolloverPlan()
    problems = plan.problems
    by_id = {school_class.id: school_class for school_class in classes}
    step_of: dict[uuid.UUID, tuple[int, Step]] = {}
    # Where each problem of the end state is reported: the step, and its field, that causes it.
    where: dict[uuid.UUID, str] = {}
    new_classes: dict[str, tuple[str, str]] = {}  # key -> (name, field of the first step naming it)
    renamed_to: dict[uuid.UUID, str] = {}
    moves: list[tuple[int, Step, str]] = []  # (index, step, the target's key after the rollover)

    for index, step in enumerate(steps):
        at = f"registrationClasses[{index}]"
        school_class = by_id.get(step.class_id)
        if school_class is None:
            problems.append(
                Problem(ErrorCode.NOT_FOUND, f"No class has the id {step.class_id}.", f"{at}.classId")
            )
            continue
        if school_class.kind != ClassKind.REGISTRATION:
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"'{school_class.name}' is a teaching class; teachingClasses says what happens to those.",
                    f"{at}.classId",
                )
            )
            continue
        if step.class_id in step_of:
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"'{school_class.name}' is named twice; give each class one step.",
                    f"{at}.classId",
                )
            )
            continue
        step_of[step.class_id] = (index, step)
        extra = {
            "newName": step.new_name is not None and step.action != RolloverAction.RENAME,
            "targetClassId": step.target_class_id is not None and step.action != RolloverAction.MOVE_TO,
            "targetClassName": step.target_class_name is not None and step.action != RolloverAction.MOVE_TO,
        }
        for name, given in extra.items():
            if given:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"'{school_class.name}': {name} does not go with {step.action.value}.",
                        f"{at}.{name}",
                    )
                )
        if step.action == RolloverAction.RENAME:
            if step.new_name is None:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"'{school_class.name}': RENAME needs a newName.",
                        f"{at}.newName",
                    )
                )
                continue
            new_name, problem = _clean_class_name(step.new_name, f"{at}.newName")
            if problem is not None:
                problems.append(problem)
                continue
            assert new_name is not None
            renamed_to[step.class_id] = new_name
            where[step.class_id] = f"{at}.newName"
        elif step.action == RolloverAction.MOVE_TO:
            if (step.target_class_id is None) == (step.target_class_name is None):
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"'{school_class.name}': MOVE_TO needs either a targetClassId (a class that exists) "
                        "or a targetClassName (a class the rollover creates).",
                        f"{at}.targetClassId",
                    )
                )
                continue
            if step.target_class_name is not None:
                target_name, problem = _clean_class_name(step.target_class_name, f"{at}.targetClassName")
                if problem is not None:
                    problems.append(problem)
                    continue
                assert target_name is not None
                key = class_name_key(target_name)
                new_classes.setdefault(key, (target_name, f"{at}.targetClassName"))
                moves.append((index, step, key))
            else:
                assert step.target_class_id is not None
                moves.append((index, step, ""))  # resolved below, once every rename is known
        elif step.action == RolloverAction.LEAVE:
            where[step.class_id] = f"{at}.action"

    # The registration classes as the rollover leaves them.
    for school_class in classes:
        if school_class.kind == ClassKind.TEACHING:
            action = {
                TeachingAction.KEEP: ClassAction.KEEP,
                TeachingAction.EMPTY: ClassAction.EMPTY,
                TeachingAction.DELETE: ClassAction.DELETE,
            }[teaching]
            plan.classes.append(PlannedClass(school_class.id, school_class.name, school_class.kind, action))
            continue
        chosen = step_of.get(school_class.id)
        own = chosen[1] if chosen else None
        if own is None or own.action == RolloverAction.KEEP:
            plan.classes.append(
                PlannedClass(school_class.id, school_class.name, school_class.kind, ClassAction.KEEP)
            )
        elif own.action == RolloverAction.RENAME:
            if school_class.id not in renamed_to:
                continue  # its problem is reported
            plan.classes.append(
                PlannedClass(
                    school_class.id,
                    school_class.name,
                    school_class.kind,
                    ClassAction.RENAME,
                    new_name=renamed_to[school_class.id],
                )
            )
        elif own.action == RolloverAction.LEAVE:
            plan.classes.append(
                PlannedClass(school_class.id, school_class.name, school_class.kind, ClassAction.LEAVE)
            )
        else:
            plan.classes.append(
                PlannedClass(school_class.id, school_class.name, school_class.kind, ClassAction.KEEP)
            )
    for key, (name, _at) in new_classes.items():
        plan.classes.append(
            PlannedClass(None, name, ClassKind.REGISTRATION, ClassAction.CREATE, target_key=key)
        )

    # Two classes with one name after the rollover.
    holders: dict[str, list[PlannedClass]] = defaultdict(list)
    for planned in plan.classes:
        if planned.kind == ClassKind.REGISTRATION and (final := planned.final_name) is not None:
            holders[class_name_key(final)].append(planned)
    for planned_list in holders.values():
        if len(planned_list) < 2:
            continue
        described = " and ".join(_described(planned) for planned in planned_list)
        shared = planned_list[0].final_name
        for planned in planned_list:
            if planned.class_id is None:
                at = new_classes[planned.target_key or ""][1]
            elif planned.class_id in where:
                at = where[planned.class_id]
            else:
                continue  # a class that keeps its name: the step that takes it is the one at fault
            problems.append(
                Problem(
                    ErrorCode.CLASS_NAME_TAKEN,
                    f"After the rollover two classes would be called '{shared}': {described}.",
                    at,
                )
            )

    # Moves, now that every class's end state is known.
    leaving = {planned.class_id for planned in plan.classes if planned.action == ClassAction.LEAVE}
    resolved: dict[uuid.UUID, tuple[str, uuid.UUID | None]] = {}
    for index, step, key in moves:
        at = f"registrationClasses[{index}]"
        source = by_id[step.class_id]
        target_id = step.target_class_id
        if target_id is not None:
            target = by_id.get(target_id)
            if target is None:
                problems.append(
                    Problem(ErrorCode.NOT_FOUND, f"No class has the id {target_id}.", f"{at}.targetClassId")
                )
                continue
            if target.kind != ClassKind.REGISTRATION:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"'{source.name}' cannot move into '{target.name}': it is a teaching class.",
                        f"{at}.targetClassId",
                    )
                )
                continue
            if target_id == step.class_id:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"'{source.name}' cannot move into itself; KEEP it instead.",
                        f"{at}.targetClassId",
                    )
                )
                continue
            if target_id in leaving:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"'{source.name}' moves into '{target.name}', which is leaving.",
                        f"{at}.targetClassId",
                    )
                )
                continue
            final = next(
                (p.final_name for p in plan.classes if p.class_id == target_id and p.final_name is not None),
                None,
            )
            if final is None:
                continue  # its own step's problem is reported
            key = class_name_key(final)
        resolved[step.class_id] = (key, target_id)

    moved = [
        PlannedClass(
            planned.class_id,
            planned.name,
            planned.kind,
            ClassAction.MOVE_TO,
            target_key=resolved[planned.class_id][0],
            target_class_id=resolved[planned.class_id][1],
        )
        if planned.class_id in resolved
        else planned
        for planned in plan.classes
    ]
    plan.classes = moved
    return plan


def _described(planned: PlannedClass) -> str:
    match planned.action:
        case ClassAction.RENAME:
            return f"'{planned.name}' renamed"
        case ClassAction.CREATE:
            return "a new class for a MOVE_TO"
        case _:
            return f"'{planned.name}' as it is"
