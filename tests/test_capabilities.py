"""What the UI may offer on a row (User.viewerCan*, SchoolClass.viewerCanEdit) is what the mutation does:
for every kind of caller and every kind of user, each capability is true exactly when its mutation succeeds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.audit import Actor
from db.classes import assign_to_class, create_class
from db.engine import Database
from db.manage_users import restore_users
from db.models import ClassKind, Provider, UserType
from db.scope import school_scope
from tests.conftest import (
    ADMIN_PASSWORD,
    SchoolFixture,
    graphql,
    make_api_token,
    make_school,
    make_user,
    sign_in_as,
)

PASSWORD = "a-teachers-password"
ROW = (
    "query ($id: ID!) { user(id: $id) { surname version viewerCanEdit viewerCanDelete "
    "viewerCanResetPassword viewerCanPrintLoginCard } }"
)
CLASS = "query ($id: ID!) { schoolClass(id: $id) { viewerCanEdit } }"
EDIT = (
    "mutation ($id: ID!, $value: String!, $version: Int!) { updateUserField(userId: $id, field: SURNAME, "
    "value: $value, expectedVersion: $version) { errors { code } } }"
)
DELETE = "mutation ($id: ID!) { deleteUsers(userIds: [$id]) { errors { code } } }"
RESET = (
    "mutation ($id: ID!, $current: String!) { resetPasswords(userIds: [$id], currentPassword: $current, "
    'newPassword: "kite-and-string", confirmPassword: "kite-and-string") { errors { code } } }'
)
PRINT = "query ($id: ID!) { loginCardSheet(userIds: [$id]) { cards { code } } }"
CLASS_EDIT = "mutation ($id: ID!) { removeFromClass(classId: $id, userIds: []) { errors { code } } }"

CALLERS = ("admin", "teacher", "teacher allowed to reset", "pupil", "api token", "managed school's admin")
TARGETS = (
    "self",
    "another admin",
    "a colleague",
    "a pupil of their class",
    "another pupil",
    "a deleted pupil",
)


@dataclass
class World:
    school: SchoolFixture
    caller: uuid.UUID | None
    token: str
    password: str
    targets: dict[str, uuid.UUID]
    class_id: uuid.UUID


async def world(owner_engine: AsyncEngine, db: Database, caller: str) -> World:
    managed = caller == "managed school's admin"
    school = await make_school(owner_engine, db, **({"provider": Provider.C2K} if managed else {}))
    teacher = await make_user(db, school, type=UserType.TEACHER, password=PASSWORD)
    other_admin = await make_user(db, school, type=UserType.TEACHER, is_admin=True)
    colleague = await make_user(db, school, type=UserType.TEACHER)
    own_pupil, other_pupil, deleted = [await make_user(db, school, password=PASSWORD) for _ in range(3)]
    actor = Actor(id=school.admin_id, label="admin")
    async with school_scope(db, school.id) as session:
        form = await create_class(
            session,
            school_id=school.id,
            actor=actor,
            name="3B",
            kind=ClassKind.TEACHING,
            allow_provider_managed=managed,
        )
        await assign_to_class(
            session,
            school_id=school.id,
            actor=actor,
            class_id=form.id,
            user_ids=[teacher, colleague, own_pupil, deleted, school.admin_id],
            allow_provider_managed=managed,
        )
        await session.execute(text("update users set deleted_at = now() where id = :id"), {"id": deleted})
        if caller == "teacher allowed to reset":
            await session.execute(text("update schools set teachers_can_reset_pupil_passwords = true"))
    me: uuid.UUID | None = {
        "admin": school.admin_id,
        "managed school's admin": school.admin_id,
        "teacher": teacher,
        "teacher allowed to reset": teacher,
        "pupil": own_pupil,
    }.get(caller)
    token = await make_api_token(db, school) if me is None else await sign_in_as(db, school, me)
    return World(
        school=school,
        caller=me,
        token=token,
        password=ADMIN_PASSWORD if me == school.admin_id else PASSWORD,
        targets={
            "self": me or school.admin_id,
            "another admin": other_admin,
            "a colleague": colleague,
            "a pupil of their class": own_pupil,
            "another pupil": other_pupil,
            "a deleted pupil": deleted,
        },
        class_id=form.id,
    )


def succeeded(body: dict[str, Any]) -> bool:
    if body.get("errors"):
        return False
    (answer,) = body["data"].values()
    if "cards" in answer:
        return bool(answer["cards"])
    return answer["errors"] == []


async def shown(http: httpx.AsyncClient, w: World, target: uuid.UUID) -> dict[str, Any]:
    """What the row says, read as the caller; as an admin when the caller may not read the row at all."""
    body = await graphql(http, ROW, {"id": str(target)}, token=w.token)
    row = (body.get("data") or {}).get("user")
    if row is None:
        # A caller who cannot read the roster sees no row, so no offer: every capability is false.
        as_admin = await graphql(http, ROW, {"id": str(target)}, token=w.school.admin_token)
        row = {
            **as_admin["data"]["user"],
            **{key: False for key in as_admin["data"]["user"] if key.startswith("viewerCan")},
        }
    return dict(row)


@pytest.mark.parametrize("caller", CALLERS)
async def test_each_capability_is_what_its_mutation_does(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, caller: str
) -> None:
    w = await world(owner_engine, db, caller)
    seen: dict[tuple[str, str], tuple[bool, bool]] = {}
    for name, target in w.targets.items():
        row = await shown(http, w, target)
        variables = {"id": str(target)}
        # Each mutation is tried once; those that change something change nothing the others look at, or are
        # undone before the next.
        edit = await graphql(
            http, EDIT, {**variables, "value": row["surname"], "version": row["version"]}, token=w.token
        )
        printed = await graphql(http, PRINT, variables, token=w.token)
        reset = await graphql(http, RESET, {**variables, "current": w.password}, token=w.token)
        if name == "self" and succeeded(reset):
            w.password = "kite-and-string"  # their own, now
        delete = await graphql(http, DELETE, variables, token=w.token)
        if succeeded(delete) and name != "a deleted pupil":
            async with school_scope(db, w.school.id) as session:
                await restore_users(
                    session,
                    school_id=w.school.id,
                    actor=Actor(id=w.school.admin_id, label="admin"),
                    user_ids=[target],
                    allow_provider_managed=True,
                )
        seen[name, "edit"] = (row["viewerCanEdit"], succeeded(edit))
        seen[name, "print"] = (row["viewerCanPrintLoginCard"], succeeded(printed))
        seen[name, "reset"] = (row["viewerCanResetPassword"], succeeded(reset))
        seen[name, "delete"] = (row["viewerCanDelete"], succeeded(delete))
    class_row = await graphql(http, CLASS, {"id": str(w.class_id)}, token=w.token)
    offered = bool(((class_row.get("data") or {}).get("schoolClass") or {}).get("viewerCanEdit"))
    seen["the class", "edit"] = (
        offered,
        succeeded(await graphql(http, CLASS_EDIT, {"id": str(w.class_id)}, token=w.token)),
    )

    disagreements = {key: pair for key, pair in seen.items() if pair[0] != pair[1]}
    assert disagreements == {}, caller
    # and the test asks something: every caller but the app may do something, an admin nearly everything
    allowed = {key for key, (offered, _) in seen.items() if offered}
    if caller == "admin":
        assert ("another pupil", "delete") in allowed and ("self", "delete") not in allowed
    if caller == "teacher allowed to reset":
        assert ("a pupil of their class", "reset") in allowed and ("another pupil", "reset") not in allowed
    if caller in ("pupil", "api token"):
        assert allowed == set()
