"""What a roster file would do to the school: the preview, worked out against the roster as it is now.

A pure function of the parsed file and a snapshot of the roster, so the same planning runs at upload
(the preview) and again at confirmation (against the roster as it is by then).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from db.imports.roster_csv import RosterRow, RowProblem
from db.models import ClassKind, UserType
from db.names import class_name_key
from db.passwords import password_problem
from db.users import ADMIN_NEEDED, ONLY_TEACHERS_ARE_ADMINS, PUPILS_HAVE_NO_EMAIL


class ImportAction(enum.StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    UNCHANGED = "UNCHANGED"
    ERROR = "ERROR"
    REMOVE = "REMOVE"
    RESTORE = (
        "RESTORE"  # the username is a deleted user's: restored (db.manage_users.restore_users) and updated
    )


# What a row writes: a user created, or an existing (RESTORE: a deleted) one changed.
WRITES = frozenset({ImportAction.CREATE, ImportAction.UPDATE, ImportAction.RESTORE})


@dataclass(frozen=True, slots=True)
class ExistingUser:
    id: uuid.UUID
    username: str
    first_name: str
    surname: str
    type: UserType
    is_admin: bool
    registration_class: str | None
    teaching_classes: frozenset[str]  # name keys (db.names.class_name_key)
    email: str | None = None
    teaching_class_names: tuple[str, ...] = ()  # as the classes are spelt, sorted: what a preview shows


@dataclass(frozen=True, slots=True)
class Roster:
    """The school's active users (by lowercased username) and classes (by kind and name key); `deleted`, the
    deleted users (the latest deleted by username) a row of the file restores."""

    users: dict[str, ExistingUser]
    classes: dict[tuple[ClassKind, str], str]
    pupil_min_password_length: int
    deleted: dict[str, ExistingUser] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    """What a row asks a user to be; None for a column the file does not have (it leaves the value alone)."""

    username: str
    first_name: str
    surname: str
    type: UserType
    is_admin: bool
    registration_class: str | None
    teaching_classes: tuple[str, ...]
    password: str | None
    email: str | None = None


@dataclass(slots=True)
class PlannedRow:
    row_number: int | None  # None for a pupil the file leaves out (REMOVE)
    username: str
    action: ImportAction
    user_id: uuid.UUID | None = None
    # GraphQL field name (User's) -> (from, to): as the roster spells it, and as the file does.
    changes: dict[str, tuple[str, str]] = field(default_factory=dict)
    errors: list[RowProblem] = field(default_factory=list)
    target: Target | None = None


@dataclass(slots=True)
class Plan:
    rows: list[PlannedRow]
    new_classes: list[tuple[ClassKind, str]]

    def totals(self) -> dict[str, int]:
        counts = {action.value: 0 for action in ImportAction}
        for row in self.rows:
            counts[row.action.value] += 1
        return counts

    @property
    def has_errors(self) -> bool:
        return any(row.action == ImportAction.ERROR for row in self.rows)


def _target(row: RosterRow, columns: frozenset[str], existing: ExistingUser | None) -> Target:
    """The user this row describes; a column the file lacks keeps the existing value (or the default)."""
    if existing is None:
        existing = ExistingUser(
            id=uuid.UUID(int=0),
            username=row.username,
            first_name="",
            surname="",
            type=UserType.PUPIL,
            is_admin=False,
            registration_class=None,
            teaching_classes=frozenset(),
        )
    has = columns.__contains__
    return Target(
        username=row.username,
        first_name=row.first_name if has("first_name") else existing.first_name,
        surname=row.surname if has("surname") else existing.surname,
        type=row.type or existing.type,
        is_admin=existing.is_admin if row.is_admin is None else row.is_admin,
        registration_class=row.registration_class
        if has("registration_class")
        else existing.registration_class,
        teaching_classes=row.teaching_classes
        if has("teaching_classes")
        else existing.teaching_class_names or tuple(sorted(existing.teaching_classes)),
        password=row.password,
        email=row.email if has("email") else existing.email,
    )


def _changes(existing: ExistingUser, target: Target) -> dict[str, tuple[str, str]]:
    changes: dict[str, tuple[str, str]] = {}

    def compare(name: str, old: str, new: str, *, fold: bool = False) -> None:
        if (class_name_key(old) if fold else old) != (class_name_key(new) if fold else new):
            changes[name] = (old, new)

    compare("username", existing.username, target.username)
    compare("firstName", existing.first_name, target.first_name)
    compare("surname", existing.surname, target.surname)
    compare("type", existing.type.value, target.type.value)
    compare("isAdmin", str(existing.is_admin).lower(), str(target.is_admin).lower())
    compare(
        "registrationClass", existing.registration_class or "", target.registration_class or "", fold=True
    )
    # Compared as sets of name keys; shown as the roster and the file spell them.
    if existing.teaching_classes != frozenset(class_name_key(name) for name in target.teaching_classes):
        changes["teachingClasses"] = (
            ";".join(existing.teaching_class_names),
            ";".join(target.teaching_classes),
        )
    compare("email", existing.email or "", target.email or "")
    if target.password is not None:
        changes["password"] = ("", "(new password)")
    return changes


def _problems(row_number: int, target: Target, roster: Roster) -> list[RowProblem]:
    problems = []
    if target.is_admin and target.type != UserType.TEACHER:
        problems.append(RowProblem(row_number, "is_admin", ONLY_TEACHERS_ARE_ADMINS))
    if target.email is not None and target.type != UserType.TEACHER:
        problems.append(RowProblem(row_number, "email", PUPILS_HAVE_NO_EMAIL))
    if target.password is not None:
        staff = target.type == UserType.TEACHER
        if problem := password_problem(
            target.password, staff=staff, pupil_min_length=roster.pupil_min_password_length
        ):
            problems.append(RowProblem(row_number, "password", problem))
    return problems


def plan_import(
    rows: Sequence[RosterRow], columns: frozenset[str], roster: Roster, *, remove_missing_pupils: bool
) -> Plan:
    planned: list[PlannedRow] = []
    in_file: set[str] = set()
    for row in rows:
        key = row.username.lower()
        in_file.add(key)
        existing = roster.users.get(key)
        deleted = roster.deleted.get(key) if existing is None else None
        if row.problems:
            planned.append(
                PlannedRow(row.row_number, row.username, ImportAction.ERROR, errors=list(row.problems))
            )
            continue
        target = _target(row, columns, existing or deleted)
        if problems := _problems(row.row_number, target, roster):
            planned.append(PlannedRow(row.row_number, row.username, ImportAction.ERROR, errors=problems))
        elif deleted is not None:
            # Not a second user under the same name: the deleted one comes back, as the file describes them.
            planned.append(
                PlannedRow(
                    row.row_number,
                    row.username,
                    ImportAction.RESTORE,
                    deleted.id,
                    _changes(deleted, target),
                    target=target,
                )
            )
        elif existing is None:
            planned.append(PlannedRow(row.row_number, row.username, ImportAction.CREATE, target=target))
        else:
            changes = _changes(existing, target)
            action = ImportAction.UPDATE if changes else ImportAction.UNCHANGED
            planned.append(
                PlannedRow(row.row_number, row.username, action, existing.id, changes, target=target)
            )
    if remove_missing_pupils:
        planned += [
            PlannedRow(None, user.username, ImportAction.REMOVE, user.id)
            for key, user in sorted(roster.users.items())
            if user.type == UserType.PUPIL and key not in in_file
        ]
    _keep_an_admin(planned, roster)
    _emails_unique(planned, roster)
    return Plan(rows=planned, new_classes=_new_classes(planned, roster))


def _keep_an_admin(planned: list[PlannedRow], roster: Roster) -> None:
    """A file that would leave the school with no admin marks the rows that take the flag away."""
    targets = {row.username.lower(): row.target for row in planned if row.target is not None}
    removed = {row.username.lower() for row in planned if row.action == ImportAction.REMOVE}
    still_admin = [
        key
        for key, user in roster.users.items()
        if user.is_admin and key not in removed and (key not in targets or targets[key].is_admin)
    ]
    new_admins = [key for key, target in targets.items() if target.is_admin]  # new users, or promoted ones
    if still_admin or new_admins or not any(user.is_admin for user in roster.users.values()):
        return
    for row in planned:
        if (
            row.target is not None
            and not row.target.is_admin
            and row.username.lower() in roster.users
            and roster.users[row.username.lower()].is_admin
        ):
            row.action = ImportAction.ERROR
            row.errors.append(RowProblem(row.row_number or 0, "is_admin", ADMIN_NEEDED))


def _emails_unique(planned: list[PlannedRow], roster: Roster) -> None:
    """Two users would share an email address (whatever its case): the rows that give it are errors."""
    targets = {row.username.lower(): row for row in planned if row.target is not None}
    removed = {row.username.lower() for row in planned if row.action == ImportAction.REMOVE}
    holders: dict[str, list[str]] = {}
    for key, user in roster.users.items():
        if key not in targets and key not in removed and user.email:
            holders.setdefault(user.email.lower(), []).append(key)
    for key, row in targets.items():
        if row.target is not None and row.target.email:
            holders.setdefault(row.target.email.lower(), []).append(key)
    for email, keys in holders.items():
        if len(keys) < 2:
            continue
        for key in keys:
            if (held := targets.get(key)) is not None:
                held.action = ImportAction.ERROR
                held.errors.append(
                    RowProblem(
                        held.row_number or 0, "email", f"The email address '{email}' belongs to another user."
                    )
                )


def _new_classes(planned: Iterable[PlannedRow], roster: Roster) -> list[tuple[ClassKind, str]]:
    wanted: dict[tuple[ClassKind, str], str] = {}
    for row in planned:
        if row.action not in WRITES or row.target is None:
            continue
        names = [(ClassKind.TEACHING, name) for name in row.target.teaching_classes]
        if row.target.registration_class:
            names.append((ClassKind.REGISTRATION, row.target.registration_class))
        for kind, name in names:
            key = (kind, class_name_key(name))
            if key not in roster.classes:
                wanted.setdefault(key, name)
    return [(kind, name) for (kind, _), name in wanted.items()]
