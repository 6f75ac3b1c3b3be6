"""The school-year rollover over real HTTP: plan (a preview that changes nothing), confirm (one transaction,
whole or not at all), revert (exact, or refused with its conflicts); and the plan's checks on their own."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from db.audit import Actor
from db.classes import assign_to_class, create_class
from db.engine import Database
from db.models import ClassKind, Provider, TeachingAction, UserType
from db.rollover.plan import ExistingClass, RolloverAction, Step, plan_rollover
from db.scope import school_scope
from tests.conftest import ADMIN_PASSWORD, SchoolFixture, graphql, make_school, make_user
from tests.test_live_progress import bearer, messages, signed_in, socket

JOB = """
  id status processed total failureReason leaversToConfirm schoolPupils
  totals { moved renamed leaving unchanged }
  classes { classId name kind action newName targetClassId targetClassName pupils pupilsAfter }
  pupils { userId username outcome fromClassName toClassName toClassId }
  conflicts { message userId classId }
"""
PLAN = f"""
mutation ($input: RolloverInput!) {{
  planRollover(input: $input) {{ job {{ {JOB} }} errors {{ code field message }} }}
}}
"""
CONFIRM = f"""
mutation ($id: ID!, $password: String!, $leavers: Int) {{
  confirmRollover(jobId: $id, currentPassword: $password, expectedLeavers: $leavers) {{
    job {{ {JOB} }} errors {{ code field message }}
  }}
}}
"""
REVERT = f"""
mutation ($id: ID!, $password: String!, $skip: Boolean!) {{
  revertRollover(jobId: $id, currentPassword: $password, skipConflicts: $skip) {{
    job {{ {JOB} }} errors {{ code field message userId }}
  }}
}}
"""


# ---- the plan on its own ------------------------------------------------------------------------------

P = {name: ExistingClass(uuid.uuid4(), name, ClassKind.REGISTRATION) for name in ("P3", "P4", "P5", "P6")}
CHOIR = ExistingClass(uuid.uuid4(), "Choir", ClassKind.TEACHING)
CLASSES = [*P.values(), CHOIR]


def rename(name: str, to: str) -> Step:
    return Step(P[name].id, RolloverAction.RENAME, new_name=to)


def problems(*steps: Step) -> list[tuple[str | None, str]]:
    plan = plan_rollover(CLASSES, steps, TeachingAction.KEEP)
    return [(problem.field, problem.code.value) for problem in plan.problems]


def test_a_chain_of_renames_and_a_swap_are_one_step_whatever_the_order() -> None:
    assert problems(rename("P3", "P4"), rename("P4", "P5"), rename("P5", "P6"), rename("P6", "P7")) == []
    assert problems(rename("P6", "P7"), rename("P5", "P6"), rename("P4", "P5"), rename("P3", "P4")) == []
    assert problems(rename("P3", "P4"), rename("P4", "P3")) == []
    # Moves chain too, and a LEAVE frees its class's name.
    moves = [
        Step(P["P6"].id, RolloverAction.LEAVE),
        rename("P5", "P6"),
        Step(P["P4"].id, RolloverAction.MOVE_TO, target_class_id=P["P5"].id),
        Step(P["P3"].id, RolloverAction.MOVE_TO, target_class_name="P4 new"),
    ]
    assert problems(*moves) == []


def test_contradictory_plans_are_refused_step_by_step() -> None:
    # P3 takes P5's name while P5 keeps it.
    assert problems(rename("P3", "P5")) == [("registrationClasses[0].newName", "CLASS_NAME_TAKEN")]
    # Two renames to one name (whatever the case): both are reported.
    assert problems(rename("P3", "P9"), rename("P4", "p9")) == [
        ("registrationClasses[0].newName", "CLASS_NAME_TAKEN"),
        ("registrationClasses[1].newName", "CLASS_NAME_TAKEN"),
    ]
    # A move into a class that is leaving, and into itself.
    assert problems(
        Step(P["P6"].id, RolloverAction.LEAVE),
        Step(P["P5"].id, RolloverAction.MOVE_TO, target_class_id=P["P6"].id),
        Step(P["P4"].id, RolloverAction.MOVE_TO, target_class_id=P["P4"].id),
    ) == [
        ("registrationClasses[1].targetClassId", "INVALID_INPUT"),
        ("registrationClasses[2].targetClassId", "INVALID_INPUT"),
    ]
    # A new class with the name of a class that stays.
    assert problems(Step(P["P3"].id, RolloverAction.MOVE_TO, target_class_name="P4")) == [
        ("registrationClasses[0].targetClassName", "CLASS_NAME_TAKEN")
    ]
    # Named twice; a teaching class; an unknown class; steps that are not whole.
    assert problems(
        rename("P3", "X"),
        Step(P["P3"].id, RolloverAction.KEEP),
        Step(CHOIR.id, RolloverAction.LEAVE),
        Step(uuid.uuid4(), RolloverAction.LEAVE),
        Step(P["P4"].id, RolloverAction.RENAME),
        Step(P["P5"].id, RolloverAction.MOVE_TO),
        Step(P["P6"].id, RolloverAction.LEAVE, new_name="Z"),
    ) == [
        ("registrationClasses[1].classId", "INVALID_INPUT"),
        ("registrationClasses[2].classId", "INVALID_INPUT"),
        ("registrationClasses[3].classId", "NOT_FOUND"),
        ("registrationClasses[4].newName", "INVALID_INPUT"),
        ("registrationClasses[5].targetClassId", "INVALID_INPUT"),
        ("registrationClasses[6].newName", "INVALID_INPUT"),
    ]


# ---- a school to roll over ----------------------------------------------------------------------------


async def dump(db: Database, school: SchoolFixture, *, skip_user_columns: tuple[str, ...] = ()) -> list[Any]:
    """Every row of the school's users, classes and memberships, every column (less `skip_user_columns`)."""
    skipped = ", ".join(f"'{column}'" for column in skip_user_columns) or "''"
    async with school_scope(db, school.id) as session:
        rows = []
        for query in (
            f"SELECT to_jsonb(u) - ARRAY[{skipped}]::text[] FROM users u ORDER BY id",
            "SELECT to_jsonb(c) FROM classes c ORDER BY id",
            "SELECT to_jsonb(m) FROM class_memberships m ORDER BY class_id, user_id",
        ):
            rows.append((await session.execute(text(query))).scalars().all())
    return rows


async def build(
    db: Database, school: SchoolFixture, classes: dict[str, int], *, kind: ClassKind = ClassKind.REGISTRATION
) -> dict[str, tuple[str, list[uuid.UUID]]]:
    """Classes with that many pupils each: name -> (class id, pupil ids)."""
    made: dict[str, tuple[str, list[uuid.UUID]]] = {}
    actor = Actor(id=school.admin_id, label="admin")
    for name, count in classes.items():
        pupils = [
            await make_user(db, school, username=f"{name.lower()}-{i}".replace(" ", "")) for i in range(count)
        ]
        async with school_scope(db, school.id) as session:
            school_class = await create_class(session, school_id=school.id, actor=actor, name=name, kind=kind)
            if pupils:
                await assign_to_class(
                    session, school_id=school.id, actor=actor, class_id=school_class.id, user_ids=pupils
                )
        made[name] = (str(school_class.id), pupils)
    return made


async def join(db: Database, school: SchoolFixture, class_id: str, user_ids: list[uuid.UUID]) -> None:
    async with school_scope(db, school.id) as session:
        await assign_to_class(
            session,
            school_id=school.id,
            actor=Actor(id=school.admin_id, label="admin"),
            class_id=uuid.UUID(class_id),
            user_ids=user_ids,
        )


async def plan(http: httpx.AsyncClient, school: SchoolFixture, **given: Any) -> dict[str, Any]:
    body = await graphql(http, PLAN, {"input": given}, token=school.admin_token)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["planRollover"]
    return payload


async def confirm(
    http: httpx.AsyncClient,
    school: SchoolFixture,
    job_id: str,
    leavers: int | None = None,
    password: str = ADMIN_PASSWORD,
) -> dict[str, Any]:
    body = await graphql(
        http, CONFIRM, {"id": job_id, "password": password, "leavers": leavers}, token=school.admin_token
    )
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["confirmRollover"]
    return payload


async def revert(
    http: httpx.AsyncClient, school: SchoolFixture, job_id: str, skip: bool = False
) -> dict[str, Any]:
    body = await graphql(
        http, REVERT, {"id": job_id, "password": ADMIN_PASSWORD, "skip": skip}, token=school.admin_token
    )
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["revertRollover"]
    return payload


async def scalar(db: Database, school: SchoolFixture, query: str, **params: Any) -> Any:
    async with school_scope(db, school.id) as session:
        return (await session.execute(text(query), params)).scalar()


async def registration_of(db: Database, school: SchoolFixture) -> dict[str, str | None]:
    """Each pupil's username -> their registration class's name (None: no class); active pupils only."""
    async with school_scope(db, school.id) as session:
        rows = await session.execute(
            text("""
            SELECT u.username, c.name FROM users u
            LEFT JOIN class_memberships m ON m.user_id = u.id AND m.kind = 'REGISTRATION'
            LEFT JOIN classes c ON c.id = m.class_id
            WHERE u.type = 'PUPIL' AND u.deleted_at IS NULL
            """)
        )
        return {username: name for username, name in rows}


PRIMARY = {f"P{year}": 3 for year in range(1, 8)}


def primary_steps(made: dict[str, tuple[str, list[uuid.UUID]]]) -> list[dict[str, Any]]:
    return [
        {"classId": made["P7"][0], "action": "LEAVE"},
        *({"classId": made[f"P{y}"][0], "action": "RENAME", "newName": f"P{y + 1}"} for y in range(1, 7)),
    ]


async def test_a_primary_school_moves_up_a_year_and_p7_leaves(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    made = await build(db, school, PRIMARY)
    teacher = await make_user(db, school, type=UserType.TEACHER, username="p7-teacher")
    await join(db, school, made["P7"][0], [teacher])
    choir = await build(db, school, {"Choir": 0}, kind=ClassKind.TEACHING)
    await join(db, school, choir["Choir"][0], [made["P2"][1][0], teacher])
    cards_before = await scalar(db, school, "SELECT sum(login_code_version) FROM users WHERE type = 'PUPIL'")
    before = await dump(db, school)

    planned = await plan(http, school, registrationClasses=primary_steps(made), teachingClasses="EMPTY")
    assert planned["errors"] == []
    job = planned["job"]
    assert job["status"] == "PREVIEW"
    assert job["totals"] == {"moved": 0, "renamed": 18, "leaving": 3, "unchanged": 0}
    assert job["leaversToConfirm"] is True  # 3 of 21 is more than a tenth
    by_name = {c["name"]: c for c in job["classes"]}
    assert by_name["P7"]["action"] == "LEAVE" and by_name["P7"]["pupilsAfter"] == 0
    assert by_name["P6"] | {} == by_name["P6"] and by_name["P6"]["newName"] == "P7"
    assert by_name["P6"]["pupilsAfter"] == 3
    assert by_name["Choir"]["action"] == "EMPTY"
    pupils = {p["username"]: p for p in job["pupils"]}
    assert pupils["p3-0"]["outcome"] == "RENAMED" and pupils["p3-0"]["toClassName"] == "P4"
    assert pupils["p7-2"]["outcome"] == "LEAVING" and pupils["p7-2"]["toClassName"] is None
    assert await dump(db, school) == before  # the preview changes nothing

    # More than a tenth leave: the number must be confirmed, and right; the preview waits meanwhile.
    for wrong in (None, 4):
        refused = await confirm(http, school, job["id"], leavers=wrong)
        assert [e["code"] for e in refused["errors"]] == ["LEAVERS_NOT_CONFIRMED"], refused
    assert await dump(db, school) == before
    wrong_password = await confirm(http, school, job["id"], leavers=3, password="not-it")
    assert [e["code"] for e in wrong_password["errors"]] == ["REAUTH_FAILED"]
    applied = await confirm(http, school, job["id"], leavers=3)
    assert applied["errors"] == [], applied
    assert applied["job"]["status"] == "SUCCEEDED"
    assert applied["job"]["processed"] == applied["job"]["total"] == 21

    assert await registration_of(db, school) == {
        f"p{y}-{i}": f"P{y + 1}" for y in range(1, 7) for i in range(3)
    }
    names = await scalar(db, school, "SELECT string_agg(name, ',' ORDER BY name) FROM classes")
    assert names == "Choir,P2,P3,P4,P5,P6,P7"
    # The leavers are deleted (restorable), the P7 teacher stays, the choir lost its pupil but not its teacher.
    assert await scalar(db, school, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL") == 3
    assert await scalar(db, school, "SELECT deleted_at FROM users WHERE id = :id", id=teacher) is None
    choir_members = await scalar(
        db,
        school,
        "SELECT array_agg(user_id) FROM class_memberships WHERE class_id = :c",
        c=uuid.UUID(choir["Choir"][0]),
    )
    assert choir_members == [teacher]
    # New year, new cards: every pupil's code rotated once.
    cards_after = await scalar(db, school, "SELECT sum(login_code_version) FROM users WHERE type = 'PUPIL'")
    assert cards_after == cards_before + 21
    # Audited, and in the change feed with the admin as its actor.
    actions = await scalar(db, school, "SELECT array_agg(DISTINCT action) FROM audit_events")
    assert {"rollover.planned", "rollover.applied", "class.renamed", "class.deleted", "users.deleted"} <= set(
        actions
    )
    assert {"login_codes.rotated", "class.members_removed"} <= set(actions)
    feed = await scalar(
        db,
        school,
        "SELECT count(*) FROM changes WHERE actor = :actor AND at >= (SELECT applied_at FROM rollover_jobs)",
        actor=f"user:{school.admin_id}",
    )
    assert feed >= 6 + 3 + 1  # six classes renamed, three leavers, P7 deleted, memberships...
    again = await confirm(http, school, job["id"], leavers=3)
    assert [e["code"] for e in again["errors"]] == ["ROLLOVER_NOT_CONFIRMABLE"]


async def test_a_secondary_school_moves_into_new_classes(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    made = await build(db, school, {"7A": 4, "7B": 4, "8A": 5, "8B": 5, "Year 13": 1})
    steps = [
        {"classId": made["8A"][0], "action": "MOVE_TO", "targetClassName": "9A"},
        {"classId": made["8B"][0], "action": "MOVE_TO", "targetClassName": "9B"},
        # 7A moves into 8A as 8A's own pupils leave it for 9A: one step.
        {"classId": made["7A"][0], "action": "MOVE_TO", "targetClassId": made["8A"][0]},
        {"classId": made["7B"][0], "action": "MOVE_TO", "targetClassId": made["8B"][0]},
        {"classId": made["Year 13"][0], "action": "LEAVE"},
    ]
    planned = await plan(http, school, registrationClasses=steps, rotateLoginCodes=False)
    assert planned["errors"] == []
    job = planned["job"]
    assert job["totals"] == {"moved": 18, "renamed": 0, "leaving": 1, "unchanged": 0}
    assert job["leaversToConfirm"] is False
    new = {c["name"]: c for c in job["classes"] if c["action"] == "CREATE"}
    assert sorted(new) == ["9A", "9B"] and new["9A"]["pupilsAfter"] == 5 and new["9A"]["classId"] is None
    cards_before = await scalar(db, school, "SELECT sum(login_code_version) FROM users")
    applied = await confirm(http, school, job["id"])
    assert applied["errors"] == [], applied
    expected = {f"8a-{i}": "9A" for i in range(5)} | {f"8b-{i}": "9B" for i in range(5)}
    expected |= {f"7a-{i}": "8A" for i in range(4)} | {f"7b-{i}": "8B" for i in range(4)}
    assert await registration_of(db, school) == expected
    names = await scalar(db, school, "SELECT string_agg(name, ',' ORDER BY name) FROM classes")
    assert names == "7A,7B,8A,8B,9A,9B"
    # Cards not rotated, but the leaver's card is dead (a deletion always rotates).
    assert await scalar(db, school, "SELECT sum(login_code_version) FROM users") == cards_before + 1
    moved_in = {p["username"]: p for p in applied["job"]["pupils"]}["8a-0"]
    assert moved_in["toClassName"] == "9A" and moved_in["toClassId"] is not None


async def test_two_classes_swap_names(http: httpx.AsyncClient, db: Database, school: SchoolFixture) -> None:
    made = await build(db, school, {"Red": 2, "Blue": 2})
    steps = [
        {"classId": made["Red"][0], "action": "RENAME", "newName": "Blue"},
        {"classId": made["Blue"][0], "action": "RENAME", "newName": "Red"},
    ]
    job = (await plan(http, school, registrationClasses=steps))["job"]
    applied = await confirm(http, school, job["id"])
    assert applied["errors"] == [], applied
    assert await registration_of(db, school) == {
        "red-0": "Blue",
        "red-1": "Blue",
        "blue-0": "Red",
        "blue-1": "Red",
    }
    keys = await scalar(db, school, "SELECT string_agg(name_key, ',' ORDER BY name_key) FROM classes")
    assert keys == "blue,red"


async def test_contradictions_are_refused_over_graphql_and_change_nothing(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    made = await build(db, school, {"P5": 1, "P6": 1, "P7": 1})
    before = await dump(db, school)
    refused = await plan(
        http,
        school,
        registrationClasses=[
            {"classId": made["P5"][0], "action": "RENAME", "newName": "P6"},
            {"classId": made["P7"][0], "action": "LEAVE"},
            {"classId": made["P6"][0], "action": "MOVE_TO", "targetClassId": made["P7"][0]},
            {"classId": "not-an-id", "action": "KEEP"},
        ],
    )
    assert refused["job"] is None
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [
        ("NOT_FOUND", "registrationClasses[3].classId")
    ]
    refused = await plan(
        http,
        school,
        registrationClasses=[
            {"classId": made["P5"][0], "action": "RENAME", "newName": "p7"},
            {"classId": made["P6"][0], "action": "MOVE_TO", "targetClassId": made["P7"][0]},
            {"classId": made["P7"][0], "action": "LEAVE"},
        ],
    )
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [
        ("INVALID_INPUT", "registrationClasses[1].targetClassId")
    ]
    assert "leaving" in refused["errors"][0]["message"]
    refused = await plan(
        http, school, registrationClasses=[{"classId": made["P5"][0], "action": "RENAME", "newName": "P6"}]
    )
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [
        ("CLASS_NAME_TAKEN", "registrationClasses[0].newName")
    ]
    assert await dump(db, school) == before
    assert await scalar(db, school, "SELECT count(*) FROM rollover_jobs") == 0


async def test_a_failure_on_the_last_row_leaves_the_roster_byte_for_byte_untouched(
    http: httpx.AsyncClient, db: Database, owner_engine: AsyncEngine, school: SchoolFixture
) -> None:
    made = await build(db, school, {f"P{y}": 3 for y in range(1, 4)})
    last = max(pupil for _, pupils in made.values() for pupil in pupils)
    job = (
        await plan(
            http,
            school,
            registrationClasses=[
                {"classId": made["P3"][0], "action": "MOVE_TO", "targetClassName": "P4"},
                {"classId": made["P2"][0], "action": "MOVE_TO", "targetClassId": made["P3"][0]},
                {"classId": made["P1"][0], "action": "RENAME", "newName": "First year"},
            ],
            teachingClasses="DELETE",
        )
    )["job"]
    before = await dump(db, school)
    feed_before = await scalar(db, school, "SELECT count(*) FROM changes")
    # The database refuses the last write to the last pupil: their card's rotation, after every other change.
    trigger = f"fail_rollover_{uuid.uuid4().hex[:8]}"
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await session.execute(
            text(f"""
            CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the disk is full'; END $$
            """)
        )
        await session.execute(
            text(f"""
            CREATE TRIGGER {trigger} BEFORE UPDATE OF login_code_version ON users FOR EACH ROW
            WHEN (NEW.id = '{last}'::uuid) EXECUTE FUNCTION {trigger}()
            """)
        )
    try:
        failed = await confirm(http, school, job["id"])
    finally:
        async with async_sessionmaker(owner_engine)() as session, session.begin():
            await session.execute(text(f"DROP TRIGGER {trigger} ON users"))
            await session.execute(text(f"DROP FUNCTION {trigger}()"))
    assert [e["code"] for e in failed["errors"]] == ["ROLLOVER_FAILED"], failed
    assert "disk" not in failed["errors"][0]["message"]
    assert await dump(db, school) == before
    assert await scalar(db, school, "SELECT count(*) FROM changes") == feed_before
    assert await scalar(db, school, "SELECT status FROM rollover_jobs") == "FAILED"
    assert await scalar(db, school, "SELECT count(*) FROM rollover_memberships") == 0


async def test_a_revert_puts_everything_back_byte_for_byte(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    made = await build(db, school, {**PRIMARY, "Y8": 2})
    teacher = await make_user(db, school, type=UserType.TEACHER, username="form-tutor")
    await join(db, school, made["P7"][0], [teacher])
    groups = await build(db, school, {"Maths": 0, "Choir": 0}, kind=ClassKind.TEACHING)
    await join(db, school, groups["Maths"][0], [*made["P6"][1], teacher])
    await join(db, school, groups["Choir"][0], made["P1"][1])
    # A pupil already deleted sits in P7: the rollover deletes the class and must put them back in it.
    async with school_scope(db, school.id) as session:
        await session.execute(
            text("UPDATE users SET deleted_at = now() - interval '1 day' WHERE id = :id"),
            {"id": made["P7"][1][0]},
        )
    # What a revert moves forward on purpose: a restore is an edit (version, updated_at: syncing apps see it),
    # and the rotated cards stay rotated.
    moving = ("version", "updated_at", "login_code_version")
    before = await dump(db, school, skip_user_columns=moving)
    steps = [*primary_steps(made), {"classId": made["Y8"][0], "action": "MOVE_TO", "targetClassName": "Y9"}]
    job = (await plan(http, school, registrationClasses=steps, teachingClasses="DELETE"))["job"]
    applied = await confirm(http, school, job["id"], leavers=2)
    assert applied["errors"] == [], applied
    assert await dump(db, school, skip_user_columns=moving) != before
    cards = await scalar(db, school, "SELECT sum(login_code_version) FROM users")

    reverted = await revert(http, school, job["id"])
    assert reverted["errors"] == [], reverted
    assert reverted["job"]["status"] == "REVERTED" and reverted["job"]["conflicts"] == []
    assert await dump(db, school, skip_user_columns=moving) == before
    assert await scalar(db, school, "SELECT sum(login_code_version) FROM users") == cards
    again = await revert(http, school, job["id"])
    assert [e["code"] for e in again["errors"]] == ["ROLLOVER_NOT_REVERTIBLE"]


async def test_a_revert_refuses_what_changed_since_or_skips_it_when_asked(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    made = await build(db, school, {"P1": 2, "P2": 2, "P3": 10})
    before = await dump(db, school, skip_user_columns=("version", "updated_at", "login_code_version"))
    steps = [
        {"classId": made["P2"][0], "action": "MOVE_TO", "targetClassName": "P3 new"},
        {"classId": made["P1"][0], "action": "RENAME", "newName": "P1 old"},
    ]
    job = (await plan(http, school, registrationClasses=steps))["job"]
    assert (await confirm(http, school, job["id"]))["errors"] == []
    # Since the rollover: a moved pupil moved again, and a new class took P1's old name.
    moved_again = made["P2"][1][0]
    await join(db, school, made["P3"][0], [moved_again])
    await build(db, school, {"P1": 0})
    refused = await revert(http, school, job["id"])
    assert {(e["code"], e["userId"]) for e in refused["errors"]} == {
        ("REVERT_CONFLICT", None),
        ("REVERT_CONFLICT", str(moved_again)),
    }, refused
    assert any("P1" in e["message"] for e in refused["errors"])
    assert await scalar(db, school, "SELECT status FROM rollover_jobs") == "SUCCEEDED"

    skipped = await revert(http, school, job["id"], skip=True)
    assert skipped["errors"] == [], skipped
    assert skipped["job"]["status"] == "REVERTED"
    assert len(skipped["job"]["conflicts"]) == 2
    # The other P2 pupil is back in P2; the one moved since stays where they were put; 'P3 new' keeps them...
    registration = await registration_of(db, school)
    assert registration["p2-1"] == "P2" and registration["p2-0"] == "P3"
    # ...and 'P1 old' keeps its name, since P1 is someone else's now.
    names = await scalar(db, school, "SELECT string_agg(name, ',' ORDER BY name) FROM classes")
    assert names == "P1,P1 old,P2,P3"
    assert await dump(db, school, skip_user_columns=("version", "updated_at", "login_code_version")) != before


async def test_a_managed_school_is_refused(
    http: httpx.AsyncClient, db: Database, owner_engine: AsyncEngine
) -> None:
    managed = await make_school(owner_engine, db, provider=Provider.C2K)
    refused = await plan(http, managed, registrationClasses=[])
    assert [e["code"] for e in refused["errors"]] == ["MANAGED_BY_PROVIDER"]


@pytest.mark.parametrize("leaving", [1, 2])
async def test_the_tenth_leaving_is_the_line(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, leaving: int
) -> None:
    # 10 pupils: one leaving is a tenth (no confirmation), two are more.
    made = await build(db, school, {"Stay": 10 - leaving, "Go": leaving})
    job = (await plan(http, school, registrationClasses=[{"classId": made["Go"][0], "action": "LEAVE"}]))[
        "job"
    ]
    assert job["leaversToConfirm"] is (leaving > 1)
    applied = await confirm(http, school, job["id"])
    codes = [e["code"] for e in applied["errors"]]
    assert codes == ([] if leaving == 1 else ["LEAVERS_NOT_CONFIRMED"]), applied


async def test_a_rollover_is_followed_live_until_it_succeeds(
    http: httpx.AsyncClient, server_url: str, db: Database, school: SchoolFixture
) -> None:
    made = await build(db, school, {"P1": 3, "P2": 3})
    steps = [
        {"classId": made["P2"][0], "action": "RENAME", "newName": "P3"},
        {"classId": made["P1"][0], "action": "RENAME", "newName": "P2"},
    ]
    job = (await plan(http, school, registrationClasses=steps))["job"]
    query = (
        "subscription ($id: ID!) { rolloverJobProgress(id: $id) { jobId status processed total finished } }"
    )
    async with socket(server_url, bearer(school.admin_token)) as ws:
        await signed_in(ws)
        following = messages(ws, query, {"id": job["id"]})
        first = await anext(following)
        assert first["payload"]["data"]["rolloverJobProgress"]["status"] == "PREVIEW"
        assert (await confirm(http, school, job["id"]))["errors"] == []
        rest = [message async for message in following]
    sent = [m["payload"]["data"]["rolloverJobProgress"] for m in rest if m["type"] == "next"]
    assert sent[-1] == {
        "jobId": job["id"],
        "status": "SUCCEEDED",
        "processed": 6,
        "total": 6,
        "finished": True,
    }
    assert rest[-1]["type"] == "complete"
