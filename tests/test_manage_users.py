"""The admin's mutations: addUser, updateUserField, deleteUsers, restoreUsers, resetPasswords, and the audit log."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import Database
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
from tests.qr import make_class

USER_FIELDS = "id username firstName surname type isAdmin mustChangePassword version deletedAt"
ADD = f"""
mutation ($input: AddUserInput!) {{
  addUser(input: $input) {{ user {{ {USER_FIELDS} registrationClass {{ name }} }} errors {{ code field message }} }}
}}
"""
UPDATE = f"""
mutation ($userId: ID!, $field: UserField!, $value: String!, $expectedVersion: Int!) {{
  updateUserField(userId: $userId, field: $field, value: $value, expectedVersion: $expectedVersion) {{
    user {{ {USER_FIELDS} }} errors {{ code field message userId }}
  }}
}}
"""
DELETE = (
    f"mutation ($ids: [ID!]!) {{ deleteUsers(userIds: $ids) {{ users {{ {USER_FIELDS} }} "
    "errors { code userId message } } }"
)
RESTORE = (
    f"mutation ($ids: [ID!]!) {{ restoreUsers(userIds: $ids) {{ users {{ {USER_FIELDS} }} "
    "errors { code userId message } } }"
)
RESET = """
mutation ($ids: [ID!]!, $current: String!, $new: String!, $confirm: String!, $must: Boolean) {
  resetPasswords(userIds: $ids, currentPassword: $current, newPassword: $new, confirmPassword: $confirm,
                 mustChangePassword: $must) {
    users { id mustChangePassword version } errors { code field userId message }
  }
}
"""
AUDIT = """
query ($filter: AuditEventFilter, $first: Int, $after: String) {
  auditEvents(filter: $filter, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    edges { node { action actorLabel targetUserIds summary requestId } }
  }
}
"""
LOGIN = (
    "mutation ($s: String!, $u: String!, $p: String!) { login(school: $s, username: $u, password: $p) "
    "{ token errors { code } } }"
)


async def call(
    http: httpx.AsyncClient, school: SchoolFixture, query: str, **variables: Any
) -> dict[str, Any]:
    body = await graphql(http, query, variables, token=school.admin_token)
    assert "errors" not in body, body
    payload: dict[str, Any] = next(iter(body["data"].values()))
    return payload


def codes(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["errors"]]


async def usernames(db: Database, school: SchoolFixture) -> list[str]:
    async with school_scope(db, school.id) as session:
        return list(
            (
                await session.execute(
                    text("select username from users where deleted_at is null order by lower(username)")
                )
            ).scalars()
        )


async def add(http: httpx.AsyncClient, school: SchoolFixture, **fields: Any) -> dict[str, Any]:
    return await call(http, school, ADD, input={"password": "pupil-pass", "type": "PUPIL", **fields})


# addUser


async def test_add_user_needs_only_username_password_and_type(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    payload = await add(http, school, username="  amy.b ")
    assert payload["errors"] == []
    user = payload["user"]
    assert {k: user[k] for k in ("username", "firstName", "surname", "type", "isAdmin", "version")} == {
        "username": "amy.b",
        "firstName": "",
        "surname": "",
        "type": "PUPIL",
        "isAdmin": False,
        "version": 1,
    }
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "AMY.B", "p": "pupil-pass"})
    assert login["data"]["login"]["errors"] == []


async def test_add_user_with_everything(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    payload = await add(
        http,
        school,
        username="mr.tan",
        password="teaching-rocks",
        type="TEACHER",
        firstName=" Wei ",
        surname="Tan",
        isAdmin=True,
        mustChangePassword=True,
    )
    assert payload["errors"] == []
    assert payload["user"]["firstName"] == "Wei" and payload["user"]["isAdmin"] is True
    assert payload["user"]["mustChangePassword"] is True


async def test_add_user_reports_every_problem_and_adds_nothing(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    payload = await add(
        http, school, username="bad name!", password="x", type="PUPIL", isAdmin=True, firstName="n" * 101
    )
    assert sorted(codes(payload)) == ["INVALID_INPUT", "INVALID_INPUT", "INVALID_INPUT", "PASSWORD_TOO_WEAK"]
    assert {e["field"] for e in payload["errors"]} == {"username", "firstName", "password", "isAdmin"}
    assert payload["user"] is None
    assert await usernames(db, school) == ["admin"]


@pytest.mark.parametrize("name", ["Zo\u202eë", "\u200fAmy", "Am\u200by", "\ufeffAmy", "Amy\U000e0067"])
async def test_names_with_invisible_formatting_characters_are_refused(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, name: str
) -> None:
    added = await add(http, school, username="amy.b", firstName=name, surname=name)
    assert [(e["code"], e["field"]) for e in added["errors"]] == [
        ("INVALID_INPUT", "firstName"),
        ("INVALID_INPUT", "surname"),
    ]
    user = (await add(http, school, username="amy.c"))["user"]
    edited = await call(
        http, school, UPDATE, userId=user["id"], field="SURNAME", value=name, expectedVersion=1
    )
    assert codes(edited) == ["INVALID_INPUT"]
    assert codes(await add(http, school, username=f"amy{name}")) == ["INVALID_INPUT"]
    assert await usernames(db, school) == ["admin", "amy.c"]


async def test_names_are_stored_in_nfc(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    added = await add(http, school, username="zoe.b", firstName="Zoe\u0308", surname="Bront\u00eb")
    assert (added["user"]["firstName"], added["user"]["surname"]) == ("Zo\u00eb", "Bront\u00eb")


async def test_usernames_are_unique_case_insensitively(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    assert (await add(http, school, username="Amy"))["errors"] == []
    taken = await add(http, school, username="aMY")
    assert codes(taken) == ["USERNAME_TAKEN"]
    assert taken["errors"][0]["field"] == "username"


async def test_staff_passwords_follow_the_staff_policy(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    assert codes(await add(http, school, username="t1", type="TEACHER", password="short1")) == [
        "PASSWORD_TOO_WEAK"
    ]
    assert codes(await add(http, school, username="t2", type="TEACHER", password="iloveyou")) == [
        "PASSWORD_TOO_WEAK"
    ]
    assert codes(await add(http, school, username="p1", type="PUPIL", password="cat")) == [
        "PASSWORD_TOO_WEAK"
    ]
    assert codes(await add(http, school, username="p2", type="PUPIL", password="cat1")) == []


async def test_managed_schools_refuse_every_change_but_still_read(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database
) -> None:
    managed = await make_school(owner_engine, db, provider=Provider.C2K)
    pupil = str(await make_user(db, managed))
    operations: list[tuple[str, dict[str, Any]]] = [
        (ADD, {"input": {"username": "x", "password": "pupil-pass", "type": "PUPIL"}}),
        (UPDATE, {"userId": pupil, "field": "SURNAME", "value": "Y", "expectedVersion": 1}),
        (DELETE, {"ids": [pupil]}),
        (RESTORE, {"ids": [pupil]}),
        (RESET, {"ids": [pupil], "current": ADMIN_PASSWORD, "new": "new-pass", "confirm": "new-pass"}),
    ]
    for query, variables in operations:
        payload = await call(http, managed, query, **variables)
        assert codes(payload) == ["MANAGED_BY_PROVIDER"], query
    body = await graphql(http, "{ users { totalCount } }", token=managed.admin_token)
    assert body["data"]["users"]["totalCount"] == 2


# updateUserField


async def test_each_field_can_be_edited_and_bumps_the_version(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    user = (await add(http, school, username="dan", type="TEACHER", password="teacher-pass"))["user"]
    version = 1
    for field, value, key, shown in [
        ("USERNAME", " Daniel ", "username", "Daniel"),
        ("FIRST_NAME", "Dan", "firstName", "Dan"),
        ("SURNAME", "Evans", "surname", "Evans"),
        ("IS_ADMIN", "true", "isAdmin", True),
        ("IS_ADMIN", "false", "isAdmin", False),
        ("TYPE", "PUPIL", "type", "PUPIL"),
    ]:
        payload = await call(
            http, school, UPDATE, userId=user["id"], field=field, value=value, expectedVersion=version
        )
        assert payload["errors"] == [], (field, payload)
        assert payload["user"][key] == shown
        version += 1
        assert payload["user"]["version"] == version
    unchanged = await call(
        http, school, UPDATE, userId=user["id"], field="SURNAME", value="Evans", expectedVersion=version
    )
    assert unchanged["errors"] == [] and unchanged["user"]["version"] == version


async def test_each_field_is_validated_as_on_add(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    await add(http, school, username="taken")
    user = (await add(http, school, username="pupil"))["user"]
    for field, value, code in [
        ("USERNAME", "TAKEN", "USERNAME_TAKEN"),
        ("USERNAME", "", "INVALID_INPUT"),
        ("SURNAME", "x" * 101, "INVALID_INPUT"),
        ("TYPE", "PARENT", "INVALID_INPUT"),
        ("IS_ADMIN", "true", "INVALID_INPUT"),
        ("IS_ADMIN", "maybe", "INVALID_INPUT"),
    ]:
        payload = await call(
            http, school, UPDATE, userId=user["id"], field=field, value=value, expectedVersion=1
        )
        assert codes(payload) == [code], (field, value)
        assert payload["user"]["version"] == 1


async def test_a_stale_version_is_refused_and_returns_the_current_user(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    user = (await add(http, school, username="eve"))["user"]
    await call(http, school, UPDATE, userId=user["id"], field="SURNAME", value="First", expectedVersion=1)
    stale = await call(
        http, school, UPDATE, userId=user["id"], field="SURNAME", value="Second", expectedVersion=1
    )
    assert codes(stale) == ["VERSION_CONFLICT"]
    assert stale["user"]["surname"] == "First" and stale["user"]["version"] == 2


async def test_two_concurrent_edits_of_the_same_version_one_wins(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    user = (await add(http, school, username="race"))["user"]
    version = 1
    for round_ in range(5):
        results = await asyncio.gather(
            *(
                call(
                    http,
                    school,
                    UPDATE,
                    userId=user["id"],
                    field="SURNAME",
                    value=f"{round_}-{n}",
                    expectedVersion=version,
                )
                for n in range(2)
            )
        )
        assert sorted(codes(r)[0] if r["errors"] else "OK" for r in results) == ["OK", "VERSION_CONFLICT"]
        winner = next(r for r in results if not r["errors"])
        loser = next(r for r in results if r["errors"])
        # The refused edit comes back with the user as the winner left them, so the table can refresh.
        assert loser["user"] == winner["user"]
        version = winner["user"]["version"]
        assert version == round_ + 2


async def test_the_last_admin_keeps_the_flag(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    payload = await call(
        http, school, UPDATE, userId=str(school.admin_id), field="IS_ADMIN", value="false", expectedVersion=1
    )
    assert codes(payload) == ["LAST_ADMIN"]
    payload = await call(
        http, school, UPDATE, userId=str(school.admin_id), field="TYPE", value="PUPIL", expectedVersion=1
    )
    assert codes(payload) == ["INVALID_INPUT"]


async def test_unknown_and_foreign_ids_are_not_found(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    other = await make_school(owner_engine, db)
    foreign = str(await make_user(db, other))
    for user_id in (foreign, str(uuid.uuid4()), "not-an-id"):
        payload = await call(
            http, school, UPDATE, userId=user_id, field="SURNAME", value="x", expectedVersion=1
        )
        assert codes(payload) == ["NOT_FOUND"]
        assert payload["user"] is None


# deleteUsers and restoreUsers


async def test_deleted_users_lose_their_sessions_at_once(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school, username="leaver", password="pupil-pass")
    token = await sign_in_as(db, school, pupil)
    assert (await graphql(http, "{ me { id } }", token=token))["data"]["me"] == {"id": str(pupil)}
    payload = await call(http, school, DELETE, ids=[str(pupil)])
    assert payload["errors"] == [] and payload["users"][0]["deletedAt"] is not None
    assert (await graphql(http, "{ me { id } }", token=token))["data"]["me"] is None
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "leaver", "p": "pupil-pass"})
    assert login["data"]["login"]["errors"] == [{"code": "INVALID_CREDENTIALS"}]
    again = await call(http, school, DELETE, ids=[str(pupil)])
    assert again["errors"] == [] and again["users"][0]["deletedAt"] == payload["users"][0]["deletedAt"]


async def test_delete_is_atomic(http: httpx.AsyncClient, db: Database, school: SchoolFixture) -> None:
    a, b = await make_user(db, school, username="a1"), await make_user(db, school, username="b1")
    missing = str(uuid.uuid4())
    payload = await call(http, school, DELETE, ids=[str(a), missing, str(b)])
    assert payload["errors"] == [
        {"code": "NOT_FOUND", "userId": missing, "message": f"No user has the id {missing}."}
    ]
    assert payload["users"] == []
    assert await usernames(db, school) == ["a1", "admin", "b1"]


async def test_an_admin_cannot_delete_themself_and_the_last_admin_stays(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    assert codes(await call(http, school, DELETE, ids=[str(school.admin_id)])) == ["CANNOT_DELETE_SELF"]
    second = await make_user(db, school, username="admin2", type=UserType.TEACHER, is_admin=True)
    second_token = await sign_in_as(db, school, second)
    body = await graphql(http, DELETE, {"ids": [str(school.admin_id)]}, token=second_token)
    assert body["data"]["deleteUsers"]["errors"] == []
    # admin2 is now the last admin; nobody can remove them
    third = await make_user(db, school, username="admin3", type=UserType.TEACHER, is_admin=True)
    await graphql(
        http,
        UPDATE,
        {"userId": str(third), "field": "IS_ADMIN", "value": "false", "expectedVersion": 1},
        token=second_token,
    )
    body = await graphql(
        http,
        UPDATE,
        {"userId": str(second), "field": "IS_ADMIN", "value": "false", "expectedVersion": 1},
        token=second_token,
    )
    assert codes(body["data"]["updateUserField"]) == ["LAST_ADMIN"]


async def test_batches_are_capped(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    payload = await call(http, school, DELETE, ids=[str(uuid.uuid4()) for _ in range(1001)])
    assert codes(payload) == ["TOO_MANY"]


async def test_restore_brings_users_back_with_their_classes(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school, username="back", password="pupil-pass")
    class_id = uuid.uuid4()
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "insert into classes (school_id, id, name, name_key, kind) "
                "values (:s, :c, 'P2', 'p2', 'REGISTRATION')"
            ),
            {"s": school.id, "c": class_id},
        )
        await session.execute(
            text(
                "insert into class_memberships (school_id, class_id, user_id, kind) values "
                "(:s, :c, :u, 'REGISTRATION')"
            ),
            {"s": school.id, "c": class_id, "u": pupil},
        )
    await call(http, school, DELETE, ids=[str(pupil)])
    restored = await call(http, school, RESTORE, ids=[str(pupil)])
    assert restored["errors"] == [] and restored["users"][0]["deletedAt"] is None
    body = await graphql(
        http,
        "query ($id: ID!) { user(id: $id) { registrationClass { name } } }",
        {"id": str(pupil)},
        token=school.admin_token,
    )
    assert body["data"]["user"]["registrationClass"] == {"name": "P2"}
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "back", "p": "pupil-pass"})
    assert login["data"]["login"]["errors"] == []


async def test_restore_refuses_a_username_taken_meanwhile_and_restores_nothing(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    first, other = await make_user(db, school, username="sam"), await make_user(db, school, username="kim")
    await call(http, school, DELETE, ids=[str(first), str(other)])
    await make_user(db, school, username="SAM")
    payload = await call(http, school, RESTORE, ids=[str(first), str(other)])
    assert codes(payload) == ["USERNAME_TAKEN"] and payload["errors"][0]["userId"] == str(first)
    assert await usernames(db, school) == ["admin", "SAM"]


# resetPasswords


async def test_reset_passwords_reauthenticates_and_checks_the_policy_per_user(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school, username="pp", password="pupil-pass")
    teacher = await make_user(db, school, username="tt", password="teacher-pass", type=UserType.TEACHER)
    ids = [str(pupil), str(teacher)]

    async def reset(current: str, new: str, confirm: str, must: bool = False) -> dict[str, Any]:
        return await call(http, school, RESET, ids=ids, current=current, new=new, confirm=confirm, must=must)

    assert codes(await reset("wrong", "dog1", "dog1")) == ["REAUTH_FAILED"]
    assert codes(await reset(ADMIN_PASSWORD, "dog1", "DOG1")) == ["PASSWORDS_DO_NOT_MATCH"]
    weak = await reset(ADMIN_PASSWORD, "dog1", "dog1")
    assert weak["errors"] == [
        {
            "code": "PASSWORD_TOO_WEAK",
            "field": "newPassword",
            "userId": str(teacher),
            "message": weak["errors"][0]["message"],
        }
    ]
    pupil_token = await sign_in_as(db, school, pupil)
    done = await reset(ADMIN_PASSWORD, "blue-kite-17", "blue-kite-17", must=True)
    assert done["errors"] == []
    assert all(user["mustChangePassword"] for user in done["users"])
    assert (await graphql(http, "{ me { id } }", token=pupil_token))["data"]["me"] is None
    for username in ("pp", "tt"):
        login = await graphql(http, LOGIN, {"s": school.slug, "u": username, "p": "blue-kite-17"})
        assert login["data"]["login"]["errors"] == []
    # the acting admin's own session survives resetting their own password
    own = await call(
        http,
        school,
        RESET,
        ids=[str(school.admin_id)],
        current=ADMIN_PASSWORD,
        new="brand-new-pass",
        confirm="brand-new-pass",
    )
    assert own["errors"] == []
    assert (await graphql(http, "{ me { id } }", token=school.admin_token))["data"]["me"] is not None


async def test_reset_passwords_is_atomic(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school, username="qq", password="pupil-pass")
    payload = await call(
        http,
        school,
        RESET,
        ids=[str(pupil), str(uuid.uuid4())],
        current=ADMIN_PASSWORD,
        new="fresh-pass",
        confirm="fresh-pass",
    )
    assert codes(payload) == ["NOT_FOUND"]
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "qq", "p": "pupil-pass"})
    assert login["data"]["login"]["errors"] == []


async def allow_teacher_resets(db: Database, school: SchoolFixture) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(text("update schools set teachers_can_reset_pupil_passwords = true"))


async def test_a_teacher_resets_the_passwords_of_their_classes_pupils_when_the_school_allows_it(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given Ms Hill, form tutor of 3B (Amy) who also teaches Maths (Dan, of 3C)
    hill = await make_user(db, school, type=UserType.TEACHER, username="hill", password="hill-pass-2026")
    amy = await make_user(db, school, username="amy.o", password="amy-pass")
    dan = await make_user(db, school, username="dan.c", password="dan-pass")
    await make_class(db, school, "3B", hill, amy)
    await make_class(db, school, "3C", dan)
    await make_class(db, school, "Maths", hill, dan, kind=ClassKind.TEACHING)
    token = await sign_in_as(db, school, hill)
    variables = {"ids": [str(amy), str(dan)], "current": "hill-pass-2026", "new": "kite", "confirm": "kite"}

    # when the school does not allow it, then
    refused = await graphql(http, RESET, variables, token=token)
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]

    # when it does
    await allow_teacher_resets(db, school)
    wrong = await graphql(http, RESET, {**variables, "current": "not-mine"}, token=token)
    assert codes(wrong["data"]["resetPasswords"]) == ["REAUTH_FAILED"]
    done = await graphql(http, RESET, variables, token=token)

    # then: the same policy, the same audit, as an admin's reset
    assert done["data"]["resetPasswords"]["errors"] == []
    for username in ("amy.o", "dan.c"):
        login = await graphql(http, LOGIN, {"s": school.slug, "u": username, "p": "kite"})
        assert login["data"]["login"]["errors"] == []
    weak = await graphql(http, RESET, {**variables, "new": "kit", "confirm": "kit"}, token=token)
    # one password, one problem with it, however many pupils share it
    assert codes(weak["data"]["resetPasswords"]) == ["PASSWORD_TOO_WEAK"]
    events = (await call(http, school, AUDIT, filter={"action": "USER_PASSWORD_RESET"}))["edges"]
    assert [(e["node"]["actorLabel"], sorted(e["node"]["targetUserIds"])) for e in events] == [
        ("hill", sorted([str(amy), str(dan)]))
    ]


async def test_any_user_outside_the_teachers_classes_refuses_the_whole_batch(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    hill = await make_user(db, school, type=UserType.TEACHER, username="hill", password="hill-pass-2026")
    park = await make_user(db, school, type=UserType.TEACHER, username="park")
    amy = await make_user(db, school, username="amy.o", password="amy-pass")
    eve = await make_user(db, school, username="eve.x")
    await make_class(db, school, "3B", hill, park, amy)
    await make_class(db, school, "3C", eve)
    await allow_teacher_resets(db, school)
    token = await sign_in_as(db, school, hill)
    for other in (eve, park, school.admin_id, hill, uuid.uuid4()):
        body = await graphql(
            http,
            RESET,
            {"ids": [str(amy), str(other)], "current": "hill-pass-2026", "new": "kite", "confirm": "kite"},
            token=token,
        )
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"], other
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "amy.o", "p": "amy-pass"})
    assert login["data"]["login"]["errors"] == []
    # none of those refusals spent one of the teacher's password attempts
    assert (await graphql(http, "{ me { id } }", token=token))["data"]["me"] == {"id": str(hill)}


# email, for staff only

EMAIL_ADD = """
mutation ($input: AddUserInput!) {
  addUser(input: $input) { user { id email version } errors { code field } }
}
"""
EMAIL_OF = "query ($id: ID!) { user(id: $id) { email } }"


async def test_a_teacher_has_an_email_and_a_pupil_does_not(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    teacher = {"username": "hill", "password": "teacher-pass-1", "type": "TEACHER"}
    added = await call(http, school, EMAIL_ADD, input={**teacher, "email": " M.Hill@School.example "})
    assert added["errors"] == [] and added["user"]["email"] == "M.Hill@School.example"

    # when / then: unique in the school whatever its case, valid, at most 254 characters, never a pupil's
    for username, email, kind, code in (
        ("park", "m.hill@SCHOOL.example", "TEACHER", "EMAIL_TAKEN"),
        ("park", "not-an-address", "TEACHER", "INVALID_INPUT"),
        ("park", "a@b", "TEACHER", "INVALID_INPUT"),
        ("park", "x" * 243 + "@school.example", "TEACHER", "INVALID_INPUT"),
        ("amy", "amy@home.example", "PUPIL", "INVALID_INPUT"),
    ):
        refused = await call(
            http,
            school,
            EMAIL_ADD,
            input={"username": username, "password": "teacher-pass-1", "type": kind, "email": email},
        )
        assert refused["errors"] == [{"code": code, "field": "email"}], email
    assert await usernames(db, school) == ["admin", "hill"]
    longest = "x" * 239 + "@school.example"
    assert len(longest) == 254
    ok = await call(
        http,
        school,
        EMAIL_ADD,
        input={"username": "park", "password": "teacher-pass-1", "type": "TEACHER", "email": longest},
    )
    assert ok["errors"] == []

    # staff and ROSTER_READ tokens read it; a pupil may not
    user_id = added["user"]["id"]
    teacher_token = await sign_in_as(db, school, uuid.UUID(ok["user"]["id"]))
    token = await make_api_token(db, school)
    for reader in (school.admin_token, teacher_token, token):
        body = await graphql(http, EMAIL_OF, {"id": user_id}, token=reader)
        assert body["data"]["user"] == {"email": "M.Hill@School.example"}
    pupil = await sign_in_as(db, school, await make_user(db, school))
    hidden = await graphql(http, "{ me { email } }", token=pupil)
    assert [e["extensions"]["code"] for e in hidden["errors"]] == ["FORBIDDEN"]


async def test_the_email_cell_is_edited_like_any_other(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    teacher = await make_user(db, school, type=UserType.TEACHER, username="hill")
    pupil = await make_user(db, school, username="amy")
    set_it = await call(
        http,
        school,
        UPDATE,
        userId=str(teacher),
        field="EMAIL",
        value="hill@school.example",
        expectedVersion=1,
    )
    assert set_it["errors"] == [] and set_it["user"]["version"] == 2
    read = await graphql(http, EMAIL_OF, {"id": str(teacher)}, token=school.admin_token)
    assert read["data"]["user"] == {"email": "hill@school.example"}
    pupil_email = await call(
        http, school, UPDATE, userId=str(pupil), field="EMAIL", value="amy@home.example", expectedVersion=1
    )
    assert [(e["code"], e["field"]) for e in pupil_email["errors"]] == [("INVALID_INPUT", "value")]
    # a teacher with an email does not become a pupil until the email is removed
    to_pupil = await call(
        http, school, UPDATE, userId=str(teacher), field="TYPE", value="PUPIL", expectedVersion=2
    )
    assert codes(to_pupil) == ["INVALID_INPUT"]
    cleared = await call(
        http, school, UPDATE, userId=str(teacher), field="EMAIL", value="", expectedVersion=2
    )
    assert cleared["errors"] == []
    assert (
        await call(http, school, UPDATE, userId=str(teacher), field="TYPE", value="PUPIL", expectedVersion=3)
    )["errors"] == []
    events = (await call(http, school, AUDIT, filter={"userId": str(teacher)}))["edges"]
    summaries = [e["node"]["summary"] for e in events]
    assert {"field": "EMAIL", "from": "hill@school.example", "to": ""} in summaries


async def test_an_email_taken_while_its_teacher_was_deleted_stops_the_restore(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    first = await call(
        http,
        school,
        EMAIL_ADD,
        input={
            "username": "hill",
            "password": "teacher-pass-1",
            "type": "TEACHER",
            "email": "hill@school.example",
        },
    )
    await call(http, school, DELETE, ids=[first["user"]["id"]])
    again = await call(
        http,
        school,
        EMAIL_ADD,
        input={
            "username": "hill2",
            "password": "teacher-pass-1",
            "type": "TEACHER",
            "email": "HILL@school.example",
        },
    )
    assert again["errors"] == []
    restored = await call(http, school, RESTORE, ids=[first["user"]["id"]])
    assert codes(restored) == ["EMAIL_TAKEN"]


# audit


async def test_every_change_is_audited_without_secrets(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    user = (await add(http, school, username="audited", password="secret-pupil-pw"))["user"]
    await call(http, school, UPDATE, userId=user["id"], field="SURNAME", value="Jones", expectedVersion=1)
    await call(
        http,
        school,
        RESET,
        ids=[user["id"]],
        current=ADMIN_PASSWORD,
        new="other-secret-pw",
        confirm="other-secret-pw",
    )
    await call(http, school, DELETE, ids=[user["id"]])
    await call(http, school, RESTORE, ids=[user["id"]])
    events = (await call(http, school, AUDIT, filter={"userId": user["id"]}))["edges"]
    # Deleting a pupil rotates their login codes, in the same transaction (so at the same time).
    assert [e["node"]["action"] for e in events if e["node"]["action"] != "LOGIN_CODE_ROTATED"] == [
        "USER_RESTORED",
        "USER_DELETED",
        "USER_PASSWORD_RESET",
        "USER_UPDATED",
        "USER_CREATED",
    ]
    assert [e["node"]["action"] for e in events].index("LOGIN_CODE_ROTATED") in (1, 2)
    assert all(
        e["node"]["actorLabel"] == "admin" and e["node"]["targetUserIds"] == [user["id"]] for e in events
    )
    assert all(len(e["node"]["requestId"]) == 32 for e in events)
    assert events[4]["node"]["summary"] == {"field": "SURNAME", "from": "", "to": "Jones"}
    assert "secret" not in str(events)
    only_deletes = (await call(http, school, AUDIT, filter={"action": "USER_DELETED"}))["edges"]
    assert len(only_deletes) == 1


async def test_the_audit_log_pages(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    for i in range(5):
        await add(http, school, username=f"page{i}")
    seen: list[str] = []
    after = None
    while True:
        page = await call(http, school, AUDIT, first=2, after=after)
        seen += [e["node"]["summary"].get("username", e["node"]["action"]) for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen[:5] == ["page4", "page3", "page2", "page1", "page0"]
