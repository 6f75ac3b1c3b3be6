"""The import plan on its own: every action a roster row can lead to, and every error a plan can report.

`plan_import` is a pure function of the parsed file and a snapshot of the roster, so these tests build both
by hand and need no database.
"""

from __future__ import annotations

import dataclasses
import uuid

from db.imports.plan import (
    ADMIN_NEEDED,
    ExistingUser,
    ImportAction,
    Plan,
    Roster,
    plan_import,
)
from db.imports.roster_csv import COLUMNS, RosterRow, RowProblem
from db.models import ClassKind, UserType

ALL_COLUMNS = frozenset(COLUMNS) - {"password"}
ADMIN = ExistingUser(
    id=uuid.UUID(int=1),
    username="head",
    first_name="Hazel",
    surname="Oak",
    type=UserType.TEACHER,
    is_admin=True,
    registration_class=None,
    teaching_classes=frozenset(),
)
AVA = ExistingUser(
    id=uuid.UUID(int=2),
    username="ava.k",
    first_name="Ava",
    surname="Khan",
    type=UserType.PUPIL,
    is_admin=False,
    registration_class="7A",
    teaching_classes=frozenset({"maths"}),
    teaching_class_names=("Maths",),
)
BEN = ExistingUser(
    id=uuid.UUID(int=3),
    username="ben.o",
    first_name="Ben",
    surname="Owen",
    type=UserType.PUPIL,
    is_admin=False,
    registration_class="7A",
    teaching_classes=frozenset(),
)


def roster(*users: ExistingUser, pupil_min_password_length: int = 4) -> Roster:
    return Roster(
        users={user.username.lower(): user for user in users},
        classes={(ClassKind.REGISTRATION, "7a"): "7A", (ClassKind.TEACHING, "maths"): "Maths"},
        pupil_min_password_length=pupil_min_password_length,
    )


def row_for(user: ExistingUser, number: int = 2, **changes: object) -> RosterRow:
    """The row a school's own export has for this user, with `changes` made to it."""
    teaching = {"maths": "Maths"}
    row = RosterRow(
        row_number=number,
        username=user.username,
        first_name=user.first_name,
        surname=user.surname,
        type=user.type,
        is_admin=user.is_admin,
        registration_class=user.registration_class,
        teaching_classes=tuple(teaching[name] for name in sorted(user.teaching_classes)),
        password=None,
        problems=(),
    )
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


def new_row(username: str, number: int = 2, **fields: object) -> RosterRow:
    row = RosterRow(
        row_number=number,
        username=username,
        first_name="New",
        surname="Pupil",
        type=UserType.PUPIL,
        is_admin=False,
        registration_class=None,
        teaching_classes=(),
        password=None,
        problems=(),
    )
    return dataclasses.replace(row, **fields)  # type: ignore[arg-type]


def actions(plan: Plan) -> list[tuple[str, ImportAction]]:
    return [(row.username, row.action) for row in plan.rows]


def test_an_unchanged_export_plans_nothing_but_unchanged_rows() -> None:
    plan = plan_import(
        [row_for(ADMIN, 2), row_for(AVA, 3)], ALL_COLUMNS, roster(ADMIN, AVA), remove_missing_pupils=False
    )
    assert actions(plan) == [("head", ImportAction.UNCHANGED), ("ava.k", ImportAction.UNCHANGED)]
    assert [row.user_id for row in plan.rows] == [ADMIN.id, AVA.id]
    assert plan.new_classes == [] and not plan.has_errors
    assert plan.totals() == {"CREATE": 0, "UPDATE": 0, "UNCHANGED": 2, "ERROR": 0, "REMOVE": 0, "RESTORE": 0}


def test_a_new_username_is_created_with_the_classes_it_names() -> None:
    # given a new pupil in an existing registration class (named in another case) and a new teaching class
    row = new_row("cara.m", registration_class="7a", teaching_classes=("Maths", "Art"))

    plan = plan_import([row], ALL_COLUMNS, roster(ADMIN), remove_missing_pupils=False)

    (planned,) = plan.rows
    assert (planned.action, planned.user_id, planned.row_number) == (ImportAction.CREATE, None, 2)
    assert planned.target is not None and planned.target.teaching_classes == ("Maths", "Art")
    assert plan.new_classes == [(ClassKind.TEACHING, "Art")]


def test_a_changed_row_is_an_update_showing_each_change_from_and_to() -> None:
    row = row_for(
        AVA,
        first_name="Eva",
        registration_class="7B",
        teaching_classes=("Maths", "Art"),
        password="river-stone",
    )

    plan = plan_import([row], ALL_COLUMNS, roster(ADMIN, AVA), remove_missing_pupils=False)

    (planned,) = plan.rows
    assert (planned.action, planned.user_id) == (ImportAction.UPDATE, AVA.id)
    # named as GraphQL's User names them; spelt as the roster and the file spell them
    assert planned.changes == {
        "firstName": ("Ava", "Eva"),
        "registrationClass": ("7A", "7B"),
        "teachingClasses": ("Maths", "Maths;Art"),
        "password": ("", "(new password)"),
    }
    assert plan.new_classes == [(ClassKind.TEACHING, "Art"), (ClassKind.REGISTRATION, "7B")]


def test_case_alone_is_no_change_to_a_class_but_is_one_to_a_name() -> None:
    row = row_for(AVA, registration_class="7a", teaching_classes=("MATHS",), surname="KHAN")
    plan = plan_import([row], ALL_COLUMNS, roster(ADMIN, AVA), remove_missing_pupils=False)
    assert plan.rows[0].changes == {"surname": ("Khan", "KHAN")}


def test_a_column_the_file_lacks_keeps_what_the_user_has() -> None:
    # given a file of usernames and surnames only
    row = row_for(AVA, first_name="", surname="Khan-Ali", registration_class=None, teaching_classes=())

    plan = plan_import(
        [row], frozenset({"username", "surname"}), roster(ADMIN, AVA), remove_missing_pupils=False
    )

    (planned,) = plan.rows
    assert planned.changes == {"surname": ("Khan", "Khan-Ali")}
    assert planned.target is not None
    assert (
        planned.target.first_name,
        planned.target.registration_class,
        planned.target.teaching_classes,
    ) == ("Ava", "7A", ("Maths",))


def test_a_blank_type_keeps_the_existing_type_and_makes_a_new_user_a_pupil() -> None:
    plan = plan_import(
        [row_for(ADMIN, 2, type=None), new_row("new.one", 3, type=None)],
        ALL_COLUMNS,
        roster(ADMIN),
        remove_missing_pupils=False,
    )
    assert [row.target.type for row in plan.rows if row.target] == [UserType.TEACHER, UserType.PUPIL]
    assert actions(plan) == [("head", ImportAction.UNCHANGED), ("new.one", ImportAction.CREATE)]


def test_pupils_the_file_leaves_out_are_removed_only_when_asked() -> None:
    rows = [row_for(ADMIN, 2), row_for(AVA, 3)]
    kept = plan_import(rows, ALL_COLUMNS, roster(ADMIN, AVA, BEN), remove_missing_pupils=False)
    removed = plan_import(rows, ALL_COLUMNS, roster(ADMIN, AVA, BEN), remove_missing_pupils=True)
    assert "ben.o" not in [username for username, _ in actions(kept)]
    assert actions(removed)[-1] == ("ben.o", ImportAction.REMOVE)
    assert (removed.rows[-1].row_number, removed.rows[-1].user_id) == (None, BEN.id)


def test_a_teacher_the_file_leaves_out_is_never_removed() -> None:
    teacher = dataclasses.replace(ADMIN, id=uuid.UUID(int=9), username="mr.lee", is_admin=False)
    plan = plan_import([row_for(ADMIN)], ALL_COLUMNS, roster(ADMIN, teacher), remove_missing_pupils=True)
    assert actions(plan) == [("head", ImportAction.UNCHANGED)]


def test_the_parsers_problems_make_the_row_an_error_as_they_are() -> None:
    problem = RowProblem(4, "type", "The type must be PUPIL or TEACHER.")
    plan = plan_import(
        [row_for(AVA, 4, problems=(problem,))], ALL_COLUMNS, roster(ADMIN, AVA), remove_missing_pupils=False
    )
    assert actions(plan) == [("ava.k", ImportAction.ERROR)]
    assert plan.rows[0].errors == [problem] and plan.has_errors
    assert plan.totals()["ERROR"] == 1


def test_only_a_teacher_can_be_an_admin() -> None:
    plan = plan_import(
        [row_for(AVA, 3, is_admin=True)], ALL_COLUMNS, roster(ADMIN, AVA), remove_missing_pupils=False
    )
    assert plan.rows[0].errors == [RowProblem(3, "is_admin", "Only teachers can be admins.")]


def test_a_password_follows_the_staff_policy_or_the_schools_pupil_minimum() -> None:
    rows = [
        new_row("pupil.short", 2, password="abc"),
        new_row("pupil.ok", 3, password="abcd"),
        new_row("teacher.common", 4, type=UserType.TEACHER, password="password1"),
        new_row("teacher.short", 5, type=UserType.TEACHER, password="abcd"),
    ]

    plan = plan_import(
        rows,
        ALL_COLUMNS | {"password"},
        roster(ADMIN, pupil_min_password_length=4),
        remove_missing_pupils=False,
    )

    assert actions(plan) == [
        ("pupil.short", ImportAction.ERROR),
        ("pupil.ok", ImportAction.CREATE),
        ("teacher.common", ImportAction.ERROR),
        ("teacher.short", ImportAction.ERROR),
    ]
    messages = {row.username: [(e.column, e.message) for e in row.errors] for row in plan.rows}
    assert messages["pupil.short"] == [("password", "The password must be at least 4 characters long.")]
    assert messages["teacher.common"] == [
        ("password", "The password is too common and easy to guess; choose another.")
    ]
    assert messages["teacher.short"] == [("password", "The password must be at least 8 characters long.")]


def test_a_row_with_errors_asks_for_no_new_class() -> None:
    plan = plan_import(
        [new_row("cara.m", is_admin=True, teaching_classes=("Art",))],
        ALL_COLUMNS,
        roster(ADMIN),
        remove_missing_pupils=False,
    )
    assert plan.has_errors and plan.new_classes == []


def test_taking_the_last_admins_flag_away_is_an_error_on_that_row() -> None:
    plan = plan_import(
        [row_for(ADMIN, 2, is_admin=False), row_for(AVA, 3)],
        ALL_COLUMNS,
        roster(ADMIN, AVA),
        remove_missing_pupils=False,
    )
    assert actions(plan) == [("head", ImportAction.ERROR), ("ava.k", ImportAction.UNCHANGED)]
    assert plan.rows[0].errors == [RowProblem(2, "is_admin", ADMIN_NEEDED)]


def test_the_flag_may_move_to_another_admin_in_the_same_file() -> None:
    teacher = dataclasses.replace(ADMIN, id=uuid.UUID(int=9), username="mr.lee", is_admin=False)
    plan = plan_import(
        [row_for(ADMIN, 2, is_admin=False), row_for(teacher, 3, is_admin=True)],
        ALL_COLUMNS,
        roster(ADMIN, teacher),
        remove_missing_pupils=False,
    )
    assert actions(plan) == [("head", ImportAction.UPDATE), ("mr.lee", ImportAction.UPDATE)]


def test_a_new_admin_in_the_file_lets_the_old_one_step_down() -> None:
    plan = plan_import(
        [row_for(ADMIN, 2, is_admin=False), new_row("new.head", 3, type=UserType.TEACHER, is_admin=True)],
        ALL_COLUMNS,
        roster(ADMIN),
        remove_missing_pupils=False,
    )
    assert not plan.has_errors


def test_a_school_with_no_admin_to_keep_is_not_held_to_one() -> None:
    teacher = dataclasses.replace(ADMIN, is_admin=False)
    plan = plan_import(
        [row_for(teacher, is_admin=False)], ALL_COLUMNS, roster(teacher), remove_missing_pupils=False
    )
    assert not plan.has_errors


def test_a_deleted_users_username_restores_them() -> None:
    # given Ben, deleted, and a file that names him with a new surname
    deleted = Roster(
        users={"head": ADMIN},
        classes={(ClassKind.REGISTRATION, "7a"): "7A"},
        pupil_min_password_length=4,
        deleted={"ben.o": BEN},
    )
    row = row_for(BEN, surname="Owen-Jones", username="Ben.O")

    plan = plan_import([row], ALL_COLUMNS, deleted, remove_missing_pupils=False)

    # then he is restored (the same user, not a second one) and updated
    (planned,) = plan.rows
    assert (planned.action, planned.user_id) == (ImportAction.RESTORE, BEN.id)
    assert planned.changes == {"username": ("ben.o", "Ben.O"), "surname": ("Owen", "Owen-Jones")}
    assert plan.totals()["RESTORE"] == 1 and plan.new_classes == []


def test_an_active_user_of_the_username_is_updated_not_a_deleted_one() -> None:
    both = Roster(
        users={"head": ADMIN, "ben.o": BEN},
        classes={(ClassKind.REGISTRATION, "7a"): "7A"},
        pupil_min_password_length=4,
        deleted={"ben.o": dataclasses.replace(BEN, id=uuid.UUID(int=9))},
    )
    plan = plan_import([row_for(BEN, surname="New")], ALL_COLUMNS, both, remove_missing_pupils=False)
    assert (plan.rows[0].action, plan.rows[0].user_id) == (ImportAction.UPDATE, BEN.id)
