"""What the manage-users screen needs to render a row and act in one round trip: lastSignInAt and deletedBy,
the payloads' query root, errors of one shape, audit actions of one scheme, and the small rules."""

from __future__ import annotations

import ast
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from db.audit import AuditAction
from db.engine import Database
from db.models import UserType
from db.scope import school_scope
from gql.cost import MAX_COST
from tests.conftest import ADMIN_PASSWORD, SchoolFixture, graphql, make_api_token, make_user, sign_in_as
from tests.qr import make_class

ROOT = Path(__file__).parent.parent
UPDATE = (
    "mutation ($id: ID!, $field: UserField!, $value: String!, $version: Int!) { updateUserField(userId: $id, "
    "field: $field, value: $value, expectedVersion: $version) { user { type isAdmin version registrationClass "
    "{ name } } leftClass { name memberCount } errors { code path userId } } }"
)


async def test_last_sign_in_is_set_by_signing_in_and_read_on_both_paths(
    reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    await make_user(db, school, username="amy", password="amy-pass")
    query = '{ users(filter: {search: "amy"}) { edges { node { username lastSignInAt } } } }'
    before = await graphql(reader, query, token=school.admin_token)
    assert before["data"]["users"]["edges"] == [{"node": {"username": "amy", "lastSignInAt": None}}]

    login = await graphql(
        reader,
        'mutation ($s: String!) { login(school: $s, username: "amy", password: "amy-pass") '
        "{ token errors { code } } }",
        {"s": school.slug},
    )
    after = await graphql(reader, query, token=school.admin_token)

    assert login["data"]["login"]["errors"] == [] and login["data"]["login"]["token"]  # an API client's
    ((edge,),) = [after["data"]["users"]["edges"]]
    assert edge["node"]["lastSignInAt"] is not None
    async with school_scope(db, school.id) as session:
        opened = (
            await session.execute(
                text("select max(created_at) from audit_events where action = 'user.signed_in'")
            )
        ).scalar_one()
    assert edge["node"]["lastSignInAt"] == opened.isoformat()  # the same statement: the same time


async def test_deleted_by_names_who_deleted(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupils = [str(await make_user(db, school)) for _ in range(3)]
    await graphql(
        http,
        "mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code } } }",
        {"ids": pupils},
        token=school.admin_token,
    )
    body = await graphql(
        http,
        "{ users(filter: {status: DELETED}) { edges { node { deletedAt deletedBy { id username } } } } }",
        token=school.admin_token,
    )
    assert [edge["node"]["deletedBy"] for edge in body["data"]["users"]["edges"]] == [
        {"id": str(school.admin_id), "username": "admin"}
    ] * 3


async def test_teachers_do_not_list_deleted_users_on_either_path(
    reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    teacher = await sign_in_as(db, school, await make_user(db, school, type=UserType.TEACHER))
    api = await make_api_token(db, school)
    for status in ("DELETED", "ALL"):
        query = f"{{ users(filter: {{status: {status}}}) {{ totalCount }} }}"
        refused = await graphql(reader, query, token=teacher)
        assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"], refused
        for allowed in (school.admin_token, api):
            assert "errors" not in await graphql(reader, query, token=allowed)
    assert "errors" not in await graphql(reader, "{ users { totalCount } }", token=teacher)


async def test_a_payloads_query_is_read_after_the_change_and_counted_by_the_cost_limit(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    add = (
        'mutation { addUser(input: {username: "%s", password: "kite", type: PUPIL}) { errors { code } '
        "query { %s } } }"
    )
    done = await graphql(
        http, add % ("kit", "users { totalCount } me { username }"), token=school.admin_token
    )
    assert done["data"]["addUser"]["query"] == {"users": {"totalCount": 2}, "me": {"username": "admin"}}

    costly = (
        "a: users(first: 500) { edges { node { teachingClasses { members(first: 500) { totalCount } } } } }"
    )
    refused = await graphql(http, add % ("kat", costly), token=school.admin_token)
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["QUERY_TOO_COSTLY"]
    assert refused["errors"][0]["extensions"]["cost"] > MAX_COST
    count = await graphql(http, "{ users { totalCount } }", token=school.admin_token)
    assert count["data"]["users"]["totalCount"] == 2  # nothing ran


async def test_errors_name_their_path_and_user_the_same_way_everywhere(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school, username="taken")
    add = await graphql(
        http,
        'mutation { addUser(input: {username: "taken", password: "x", type: PUPIL, isAdmin: true}) '
        "{ errors { code path field } } }",
        token=school.admin_token,
    )
    assert add["data"]["addUser"]["errors"] == [
        {"code": "PASSWORD_TOO_WEAK", "path": ["input", "password"], "field": "password"},
        {"code": "INVALID_INPUT", "path": ["input", "isAdmin"], "field": "isAdmin"},
        {"code": "USERNAME_TAKEN", "path": ["input", "username"], "field": "username"},
    ]
    edit = await graphql(
        http,
        UPDATE,
        {"id": str(pupil), "field": "FIRST_NAME", "value": "\u202e", "version": 1},
        token=school.admin_token,
    )
    assert edit["data"]["updateUserField"]["errors"] == [
        {"code": "INVALID_INPUT", "path": ["value"], "userId": str(pupil)}
    ]
    # a malformed id is answered as an unknown one: null by a read, NOT_FOUND by a mutation
    for query in (
        '{ user(id: "nope") { id } }',
        '{ schoolClass(id: "nope") { id } }',
        '{ importJob(id: "x") { id } }',
    ):
        (answer,) = (await graphql(http, query, token=school.admin_token))["data"].values()
        assert answer is None
    deleted = "mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code path } } }"
    for bad in ("nope", str(uuid.uuid4())):
        body = await graphql(http, deleted, {"ids": [bad]}, token=school.admin_token)
        assert body["data"]["deleteUsers"]["errors"] == [{"code": "NOT_FOUND", "path": ["userIds"]}]
    by_class = await graphql(
        http, '{ users(filter: {classId: "nope"}) { totalCount } }', token=school.admin_token
    )
    assert by_class["data"]["users"]["totalCount"] == 0


async def test_the_small_rules_of_an_edited_cell(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school)
    form = await make_class(db, school, "3B", pupil)

    async def edit(field: str, value: str, version: int) -> dict[str, Any]:
        body = await graphql(
            http,
            UPDATE,
            {"id": str(pupil), "field": field, "value": value, "version": version},
            token=school.admin_token,
        )
        payload: dict[str, Any] = body["data"]["updateUserField"]
        return payload

    for field, value in (("TYPE", "teacher"), ("TYPE", " TEACHER"), ("IS_ADMIN", "yes"), ("IS_ADMIN", "1")):
        assert [e["code"] for e in (await edit(field, value, 1))["errors"]] == ["INVALID_INPUT"], value
    teacher = await edit("TYPE", "TEACHER", 1)
    assert teacher["errors"] == [] and teacher["user"]["registrationClass"] is None
    assert teacher["leftClass"] == {"name": "3B", "memberCount": 0}
    admin = await edit("IS_ADMIN", "true", 2)
    assert admin["errors"] == [] and admin["user"]["isAdmin"] is True
    async with school_scope(db, school.id) as session:
        summary = (
            await session.execute(
                text(
                    "select summary from audit_events where action = 'user.updated' order by created_at limit 1"
                )
            )
        ).scalar_one()
    assert summary["left_class_id"] == str(form)


async def test_assign_class_returns_the_moved_users_and_every_class_they_left(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    amy, ben, cal = [await make_user(db, school) for _ in range(3)]
    old_a, old_b = await make_class(db, school, "3A", amy, cal), await make_class(db, school, "3B", ben)
    new = await make_class(db, school, "4A")
    body = await graphql(
        http,
        "mutation ($id: ID!, $ids: [ID!]!) { assignClass(classId: $id, userIds: $ids) { users { id version } "
        "affectedClasses { id memberCount } errors { code } } }",
        {"id": str(new), "ids": [str(ben), str(amy)]},
        token=school.admin_token,
    )
    assert body["data"]["assignClass"] == {
        "users": [{"id": str(ben), "version": 2}, {"id": str(amy), "version": 2}],
        "affectedClasses": [
            {"id": str(new), "memberCount": 2},
            {"id": str(old_b), "memberCount": 0},
            {"id": str(old_a), "memberCount": 1},
        ],
        "errors": [],
    }


async def test_reset_passwords_answers_in_the_order_sent_with_one_error_per_problem(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    ids = [str(await make_user(db, school)) for _ in range(3)]
    ids.reverse()
    reset = (
        "mutation ($ids: [ID!]!, $new: String!) { resetPasswords(userIds: $ids, currentPassword: $current, "
        "newPassword: $new, confirmPassword: $new) { users { id } errors { code path userId } } }"
    ).replace("$current", f'"{ADMIN_PASSWORD}"')
    weak = await graphql(http, reset, {"ids": ids, "new": "ab"}, token=school.admin_token)
    assert weak["data"]["resetPasswords"]["errors"] == [
        {"code": "PASSWORD_TOO_WEAK", "path": ["newPassword"], "userId": None}
    ]
    done = await graphql(http, reset, {"ids": ids, "new": "blue-kite"}, token=school.admin_token)
    assert [user["id"] for user in done["data"]["resetPasswords"]["users"]] == ids


async def test_a_wrong_password_says_how_many_tries_are_left(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = str(await make_user(db, school))
    token = await sign_in_as(db, school, school.admin_id)
    reset = (
        'mutation ($ids: [ID!]!) { resetPasswords(userIds: $ids, currentPassword: "wrong", newPassword: "kite", '
        'confirmPassword: "kite") { errors { code attemptsRemaining message } } }'
    )
    left = []
    for _ in range(5):
        (error,) = (await graphql(http, reset, {"ids": [pupil]}, token=token))["data"]["resetPasswords"][
            "errors"
        ]
        left.append(error["attemptsRemaining"])
    assert left == [4, 3, 2, 1, 0]
    assert (await graphql(http, "{ me { id } }", token=token))["data"]["me"] is None


async def test_refusals_before_graphql_runs_are_graphql_errors(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    login = await http.post(
        "/graphql",
        json={
            "query": 'mutation ($s: String!, $p: String!) { login(school: $s, username: "admin", '
            "password: $p) { token errors { code } } }",
            "variables": {"s": school.slug, "p": ADMIN_PASSWORD},
        },
        headers={"X-Rollcall-CSRF": "1"},
    )
    # a browser (it sends the CSRF header) gets the session as an HttpOnly cookie only
    assert login.json()["data"]["login"] == {"token": None, "errors": []}
    assert "rollcall_session" in http.cookies
    answers = {
        "no CSRF header": await http.post("/graphql", json={"query": "{ me { id } }"}),
        "an upload without a token": await http.post(
            "/graphql",
            data={
                "operations": json.dumps(
                    {
                        "query": "mutation ($f: Upload!) { bulkImport(file: $f) { errors { code } } }",
                        "variables": {"f": None},
                    }
                ),
                "map": json.dumps({"0": ["variables.f"]}),
            },
            files={"0": ("r.csv", b"username\r\n", "text/csv")},
        ),
        "a mutation over GET": await http.get(
            "/graphql",
            params={"query": "mutation { logout { errors { code } } }"},
            headers={"Accept": "application/json"},
        ),
    }
    said = {
        what: (
            r.status_code,
            r.headers["content-type"].split(";")[0],
            [e["extensions"]["code"] for e in r.json()["errors"]],
        )
        for what, r in answers.items()
    }
    assert said == {
        "no CSRF header": (403, "application/json", ["FORBIDDEN"]),
        "an upload without a token": (403, "application/json", ["FORBIDDEN"]),
        "a mutation over GET": (400, "application/json", ["BAD_REQUEST"]),
    }


async def test_signing_out_without_a_session_does_nothing(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    logout = "mutation { logout { errors { code } } }"
    for token in (None, await make_api_token(db, school)):
        assert await graphql(http, logout, token=token) == {"data": {"logout": {"errors": []}}}


async def test_audit_actions_are_one_enum_and_older_names_read_as_theirs(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # an event written before the names were one scheme, kept as it was written (the log is append-only)
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "insert into audit_events (school_id, actor_label, action, summary) values "
                "(:s, 'admin', 'users.deleted', '{\"count\": 1, \"must_change_password\": true}')"
            ),
            {"s": school.id},
        )
    events = await graphql(
        http,
        "{ auditEvents(filter: {action: USER_DELETED}) { edges { node { action summary } } } }",
        token=school.admin_token,
    )
    assert events["data"]["auditEvents"]["edges"] == [
        {"node": {"action": "USER_DELETED", "summary": {"count": 1, "mustChangePassword": True}}}
    ]
    unknown = await graphql(
        http,
        '{ auditEvents(filter: {action: "users.deleted"}) { edges { cursor } } }',
        token=school.admin_token,
    )
    assert unknown["data"] is None and unknown["errors"]  # not silently nothing


def test_every_audit_writer_names_an_action_of_the_enum() -> None:
    """Every `action=` given to record_by is a member of AuditAction (or a loop over them), never a string;
    the one SQL writer binds AuditAction.USER_SIGNED_IN."""
    writers = 0
    for path in [
        *ROOT.glob("db/**/*.py"),
        *ROOT.glob("scim/**/*.py"),
        *ROOT.glob("gql/**/*.py"),
        *ROOT.glob("web/**/*.py"),
    ]:
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "record_by"
            ):
                (action,) = [k.value for k in node.keywords if k.arg == "action"]
                writers += 1
                if isinstance(action, ast.Name):  # a loop variable: every value it takes is an enum member
                    continue
                assert (
                    isinstance(action, ast.Attribute) and getattr(action.value, "id", None) == "AuditAction"
                ), f"{path}:{node.lineno}"
                assert action.attr in AuditAction.__members__, f"{path}:{node.lineno}"
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "insert into audit_events" in node.value
            ):
                assert ":action" in node.value, f"{path}:{node.lineno}"
    assert writers > 20
    source = (ROOT / "db/signin.py").read_text()
    assert '"action": AuditAction.USER_SIGNED_IN.value' in source
