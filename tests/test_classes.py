"""Classes and their rosters; createClass, renameClass, deleteClass, assignClass and removeFromClass.

Every test that reads classes or a class roster reads them on both read paths (`reader`): the compiled one and
Strawberry's; changes go through `http`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.applications import Starlette

from db.audit import Actor
from db.classes import create_class, place_new_user, with_retries
from db.engine import Database
from db.errors import DomainError, ErrorCode
from db.models import ClassKind, Provider, UserType
from db.scope import school_scope
from tests.conftest import (
    SchoolFixture,
    counting_statements,
    graphql,
    make_api_token,
    make_school,
    make_user,
    sign_in_as,
)

CLASS_FIELDS = "id name kind memberCount"
PAYLOAD = f"schoolClass {{ {CLASS_FIELDS} }} errors {{ code field message userId }}"
CREATE = (
    f"mutation ($name: String!, $kind: ClassKind!) {{ createClass(name: $name, kind: $kind) "
    f"{{ {PAYLOAD} }} }}"
)
RENAME = f"mutation ($id: ID!, $name: String!) {{ renameClass(classId: $id, name: $name) {{ {PAYLOAD} }} }}"
DELETE = f"mutation ($id: ID!) {{ deleteClass(classId: $id) {{ {PAYLOAD} }} }}"
ASSIGN = (
    f"mutation ($id: ID!, $users: [ID!]!) {{ assignClass(classId: $id, userIds: $users) {{ {PAYLOAD} }} }}"
)
REMOVE = (
    f"mutation ($id: ID!, $users: [ID!]!) {{ removeFromClass(classId: $id, userIds: $users) "
    f"{{ {PAYLOAD} }} }}"
)
CLASSES = f"query ($kind: ClassKind) {{ classes(kind: $kind) {{ {CLASS_FIELDS} }} }}"
ROSTER = f"""
query ($id: ID!, $type: UserType, $first: Int, $after: String) {{
  schoolClass(id: $id) {{
    {CLASS_FIELDS}
    members(type: $type, first: $first, after: $after) {{
      totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ username }} }}
    }}
  }}
}}
"""
USER_CLASSES = "query ($id: ID!) { user(id: $id) { registrationClass { name } teachingClasses { name } } }"


async def call(http: httpx.AsyncClient, token: str, query: str, **variables: Any) -> Any:
    body = await graphql(http, query, variables, token=token)
    assert "errors" not in body, body
    return next(iter(body["data"].values()))


def codes(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["errors"]]


async def new_class(
    http: httpx.AsyncClient, school: SchoolFixture, name: str, kind: str = "REGISTRATION"
) -> str:
    payload = await call(http, school.admin_token, CREATE, name=name, kind=kind)
    assert payload["errors"] == [], payload
    return str(payload["schoolClass"]["id"])


async def assign(http: httpx.AsyncClient, school: SchoolFixture, class_id: str, *users: uuid.UUID) -> Any:
    return await call(http, school.admin_token, ASSIGN, id=class_id, users=[str(user) for user in users])


async def pupils(db: Database, school: SchoolFixture, count: int) -> list[uuid.UUID]:
    return [await make_user(db, school, username=f"pupil{n}", surname=f"Surname{n}") for n in range(count)]


async def memberships(db: Database, school: SchoolFixture) -> set[tuple[str, uuid.UUID]]:
    """(class name, user id) for every membership in the school."""
    async with school_scope(db, school.id) as session:
        rows = await session.execute(
            text(
                "select c.name, m.user_id from class_memberships m join classes c on c.school_id = m.school_id "
                "and c.id = m.class_id and c.kind = m.kind"
            )
        )
        return {(name, user_id) for name, user_id in rows}


async def audit_events(db: Database, school: SchoolFixture, action: str) -> list[tuple[set[uuid.UUID], Any]]:
    async with school_scope(db, school.id) as session:
        rows = await session.execute(
            text(
                "select target_user_ids, summary from audit_events where action = :action order by created_at"
            ),
            {"action": action},
        )
        return [(set(targets), summary) for targets, summary in rows]


async def insert_class(session: AsyncSession, school: SchoolFixture, name: str) -> uuid.UUID:
    """A registration class written straight to the table (a managed school's provider does this)."""
    class_id: uuid.UUID = (
        await session.execute(
            text(
                "insert into classes (school_id, name, name_key, kind) "
                "values (:school, :name, lower(cast(:name as varchar)), 'REGISTRATION') returning id"
            ),
            {"school": school.id, "name": name},
        )
    ).scalar_one()
    return class_id


async def insert_membership(
    session: AsyncSession,
    school: SchoolFixture,
    class_id: uuid.UUID,
    user_id: uuid.UUID,
    kind: str = "REGISTRATION",
) -> None:
    await session.execute(
        text(
            "insert into class_memberships (school_id, class_id, user_id, kind) "
            "values (:school, :class, :user, :kind)"
        ),
        {"school": school.id, "class": class_id, "user": user_id, "kind": kind},
    )


async def soft_delete(db: Database, school: SchoolFixture, user_id: uuid.UUID) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(text("update users set deleted_at = now() where id = :id"), {"id": user_id})


# createClass, renameClass and the class list


async def test_create_classes_and_list_them_by_kind(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    created = await call(http, school.admin_token, CREATE, name="  Year 7   Blue ", kind="REGISTRATION")
    assert created["errors"] == []
    assert created["schoolClass"] | {"id": None} == {
        "id": None,
        "name": "Year 7 Blue",
        "kind": "REGISTRATION",
        "memberCount": 0,
    }
    await new_class(http, school, "maths 7", "TEACHING")
    await new_class(http, school, "Art 7", "TEACHING")

    every = await call(reader, school.admin_token, CLASSES)
    assert [(c["kind"], c["name"]) for c in every] == [
        ("REGISTRATION", "Year 7 Blue"),
        ("TEACHING", "Art 7"),
        ("TEACHING", "maths 7"),
    ]
    teaching = await call(reader, school.admin_token, CLASSES, kind="TEACHING")
    assert [c["name"] for c in teaching] == ["Art 7", "maths 7"]
    one = await call(reader, school.admin_token, ROSTER, id=created["schoolClass"]["id"])
    assert one["name"] == "Year 7 Blue" and one["members"]["totalCount"] == 0

    assert (await audit_events(db, school, "class.created"))[0] == (
        set(),
        {"class_id": created["schoolClass"]["id"], "name": "Year 7 Blue", "kind": "REGISTRATION"},
    )


async def test_an_unknown_or_malformed_class_id_reads_as_null(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, school: SchoolFixture
) -> None:
    for missing in (str(uuid.uuid4()), "not-an-id"):
        assert await call(reader, school.admin_token, ROSTER, id=missing) is None


async def test_names_are_unique_per_kind_whatever_their_case(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    blue = await new_class(http, school, "7 Blue")
    red = await new_class(http, school, "7 Red")
    taken = await call(http, school.admin_token, CREATE, name="7 BLUE", kind="REGISTRATION")
    assert taken["errors"] == [
        {
            "code": "CLASS_NAME_TAKEN",
            "field": "name",
            "userId": None,
            "message": "There is already a registration class called '7 BLUE'.",
        }
    ]
    assert taken["schoolClass"] is None
    await new_class(http, school, "7 Blue", "TEACHING")

    renamed = await call(http, school.admin_token, RENAME, id=red, name=" 7 blue")
    assert codes(renamed) == ["CLASS_NAME_TAKEN"]
    recased = await call(http, school.admin_token, RENAME, id=blue, name="7 BLUE")
    assert recased["errors"] == [] and recased["schoolClass"]["name"] == "7 BLUE"


async def test_names_are_one_to_a_hundred_characters(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    class_id = await new_class(http, school, "x" * 100)
    for name in ("", "   ", "x" * 101):
        created = await call(http, school.admin_token, CREATE, name=name, kind="TEACHING")
        assert [(e["code"], e["field"]) for e in created["errors"]] == [("INVALID_INPUT", "name")]
        renamed = await call(http, school.admin_token, RENAME, id=class_id, name=name)
        assert [(e["code"], e["field"]) for e in renamed["errors"]] == [("INVALID_INPUT", "name")]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("STRASSE", "straße"),
        ("P3", "\u04203"),  # Cyrillic capital ER
        ("P3", "Ｐ３"),  # full width
        ("Year 7 Alpha", "YEAR 7 \u0391LPHA"),  # Greek capital ALPHA
        ("Año 3", "An\u0303o 3"),  # composed and decomposed ñ
    ],
)
async def test_names_that_read_the_same_are_one_class(
    http: httpx.AsyncClient, school: SchoolFixture, first: str, second: str
) -> None:
    await new_class(http, school, first)
    other = await new_class(http, school, "Other")
    taken = await call(http, school.admin_token, CREATE, name=second, kind="REGISTRATION")
    assert codes(taken) == ["CLASS_NAME_TAKEN"] and taken["schoolClass"] is None
    assert codes(await call(http, school.admin_token, RENAME, id=other, name=second)) == ["CLASS_NAME_TAKEN"]


@pytest.mark.parametrize("name", ["P3\u202e", "\u200bP3", "\ufeffP3", "P\u200d3", "P3\U000e0041", "\u2067P3"])
async def test_names_with_invisible_formatting_characters_are_refused(
    http: httpx.AsyncClient, school: SchoolFixture, name: str
) -> None:
    class_id = await new_class(http, school, "P4")
    created = await call(http, school.admin_token, CREATE, name=name, kind="TEACHING")
    assert [(e["code"], e["field"]) for e in created["errors"]] == [("INVALID_INPUT", "name")]
    assert "invisible formatting character" in created["errors"][0]["message"]
    renamed = await call(http, school.admin_token, RENAME, id=class_id, name=name)
    assert [(e["code"], e["field"]) for e in renamed["errors"]] == [("INVALID_INPUT", "name")]


async def test_names_are_stored_in_nfc(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    created = await call(http, school.admin_token, CREATE, name="Anne\u0301e 3", kind="TEACHING")
    assert created["schoolClass"]["name"] == "Ann\u00e9e 3"


async def test_two_admins_creating_the_same_name_at_once_get_one_class(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    names = ["Science", "science", "SCIENCE", "Science ", "sCience", "Science"]
    payloads = await asyncio.gather(
        *(call(http, school.admin_token, CREATE, name=name, kind="TEACHING") for name in names)
    )
    assert sorted(codes(payload) for payload in payloads) == [[]] + [["CLASS_NAME_TAKEN"]] * 5
    assert len(await call(reader, school.admin_token, CLASSES)) == 1


async def test_rename_a_class(http: httpx.AsyncClient, db: Database, school: SchoolFixture) -> None:
    class_id = await new_class(http, school, "7B")
    renamed = await call(http, school.admin_token, RENAME, id=class_id, name="Year 7 Blue")
    assert renamed["errors"] == [] and renamed["schoolClass"]["name"] == "Year 7 Blue"
    unchanged = await call(http, school.admin_token, RENAME, id=class_id, name="Year 7 Blue")
    assert unchanged["errors"] == []
    events = await audit_events(db, school, "class.renamed")
    assert [summary for _, summary in events] == [
        {"class_id": class_id, "kind": "REGISTRATION", "from": "7B", "to": "Year 7 Blue"}
    ]

    for missing in (str(uuid.uuid4()), "nope"):
        payload = await call(http, school.admin_token, RENAME, id=missing, name="Other")
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("NOT_FOUND", "classId")]


# deleteClass


async def test_deleting_a_class_ends_its_memberships_and_keeps_its_users(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    amy, ben = await pupils(db, school, 2)
    doomed = await new_class(http, school, "7 Doomed")
    kept = await new_class(http, school, "Art", "TEACHING")
    await assign(http, school, doomed, amy, ben)
    await assign(http, school, kept, amy)
    # when
    deleted = await call(http, school.admin_token, DELETE, id=doomed)
    # then
    assert deleted["errors"] == [] and deleted["schoolClass"]["name"] == "7 Doomed"
    assert [c["name"] for c in await call(reader, school.admin_token, CLASSES)] == ["Art"]
    assert await memberships(db, school) == {("Art", amy)}
    assert await call(http, school.admin_token, USER_CLASSES, id=str(ben)) == {
        "registrationClass": None,
        "teachingClasses": [],
    }
    assert await audit_events(db, school, "class.deleted") == [
        ({amy, ben}, {"class_id": doomed, "name": "7 Doomed", "kind": "REGISTRATION"})
    ]

    again = await call(http, school.admin_token, DELETE, id=doomed)
    assert [(e["code"], e["field"]) for e in again["errors"]] == [("NOT_FOUND", "classId")]


# assignClass and removeFromClass


async def test_assigning_a_registration_class_moves_users_out_of_their_old_one(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    amy, ben, cat = await pupils(db, school, 3)
    blue = await new_class(http, school, "7 Blue")
    red = await new_class(http, school, "7 Red")
    await assign(http, school, blue, amy, ben)
    # when
    moved = await assign(http, school, red, amy, cat)
    # then
    assert moved["errors"] == []
    assert moved["schoolClass"] == {"id": red, "name": "7 Red", "kind": "REGISTRATION", "memberCount": 2}
    assert await memberships(db, school) == {("7 Blue", ben), ("7 Red", amy), ("7 Red", cat)}
    assert (await call(http, school.admin_token, USER_CLASSES, id=str(amy)))["registrationClass"] == {
        "name": "7 Red"
    }
    counts = {c["name"]: c["memberCount"] for c in await call(reader, school.admin_token, CLASSES)}
    assert counts == {"7 Blue": 1, "7 Red": 2}
    events = await audit_events(db, school, "class.members_moved")
    assert events[-1] == (
        {amy, cat},
        {"class_id": red, "name": "7 Red", "kind": "REGISTRATION", "previous_class_ids": {str(amy): blue}},
    )


async def test_assigning_a_teaching_class_adds(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    [amy] = await pupils(db, school, 1)
    teacher = await make_user(db, school, type=UserType.TEACHER)
    blue = await new_class(http, school, "7 Blue")
    maths = await new_class(http, school, "Maths", "TEACHING")
    art = await new_class(http, school, "Art", "TEACHING")
    await assign(http, school, blue, amy)
    await assign(http, school, maths, amy, teacher)

    added = await assign(http, school, art, amy)

    assert added["errors"] == [] and added["schoolClass"]["memberCount"] == 1
    assert await call(http, school.admin_token, USER_CLASSES, id=str(amy)) == {
        "registrationClass": {"name": "7 Blue"},
        "teachingClasses": [{"name": "Art"}, {"name": "Maths"}],
    }
    assert (await audit_events(db, school, "class.members_added"))[-1] == (
        {amy},
        {"class_id": art, "name": "Art", "kind": "TEACHING"},
    )


async def test_assigning_members_again_changes_nothing(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    amy, ben = await pupils(db, school, 2)
    blue = await new_class(http, school, "7 Blue")
    art = await new_class(http, school, "Art", "TEACHING")
    await assign(http, school, blue, amy, ben)
    await assign(http, school, art, amy)
    before = await memberships(db, school)

    for class_id, users in ((blue, [amy, ben, amy]), (art, [amy])):
        again = await assign(http, school, class_id, *users)
        assert again["errors"] == []

    assert await memberships(db, school) == before
    assert len(await audit_events(db, school, "class.members_moved")) == 1
    assert len(await audit_events(db, school, "class.members_added")) == 1


async def test_a_batch_with_any_bad_user_changes_nothing_and_names_every_problem(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    # given
    amy, ben, cat = await pupils(db, school, 3)
    gone = await make_user(db, school, username="gone.user")
    await soft_delete(db, school, gone)
    other = await make_school(owner_engine, db)
    stranger = await make_user(db, other)
    unknown = uuid.uuid4()
    blue = await new_class(http, school, "7 Blue")
    red = await new_class(http, school, "7 Red")
    await assign(http, school, blue, amy, ben)
    before = await memberships(db, school)
    # when
    payload = await assign(http, school, red, amy, unknown, gone, stranger, cat)
    # then
    assert payload["schoolClass"] is None
    assert [(e["code"], e["field"], e["userId"]) for e in payload["errors"]] == [
        ("NOT_FOUND", "userIds", str(unknown)),
        ("USER_DELETED", "userIds", str(gone)),
        ("NOT_FOUND", "userIds", str(stranger)),
    ]
    assert str(unknown) in payload["errors"][0]["message"] and "gone.user" in payload["errors"][1]["message"]
    assert await memberships(db, school) == before

    removed = await call(
        http, school.admin_token, REMOVE, id=blue, users=[str(amy), str(gone), str(stranger)]
    )
    assert codes(removed) == ["USER_DELETED", "NOT_FOUND"]
    assert await memberships(db, school) == before


async def test_malformed_ids_and_too_many_ids_are_refused(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    [amy] = await pupils(db, school, 1)
    blue = await new_class(http, school, "7 Blue")
    malformed = await call(http, school.admin_token, ASSIGN, id="nope", users=[str(amy), "x", "y"])
    assert [(e["code"], e["field"]) for e in malformed["errors"]] == [
        ("NOT_FOUND", "classId"),
        ("NOT_FOUND", "userIds"),
        ("NOT_FOUND", "userIds"),
    ]

    too_many = [str(uuid.uuid4()) for _ in range(1001)]
    for query in (ASSIGN, REMOVE):
        payload = await call(http, school.admin_token, query, id=blue, users=too_many)
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("TOO_MANY", "userIds")]
    assert await memberships(db, school) == set()


async def test_another_schools_class_is_not_found(
    http: httpx.AsyncClient,
    reader: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    db: Database,
    school: SchoolFixture,
) -> None:
    [amy] = await pupils(db, school, 1)
    other = await make_school(owner_engine, db)
    theirs = await new_class(http, other, "7 Blue")
    for query, variables in (
        (ASSIGN, {"users": [str(amy)]}),
        (REMOVE, {"users": [str(amy)]}),
        (RENAME, {"name": "Mine"}),
        (DELETE, {}),
    ):
        payload = await call(http, school.admin_token, query, id=theirs, **variables)
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [("NOT_FOUND", "classId")], query
    assert await call(reader, school.admin_token, ROSTER, id=theirs) is None
    assert (await call(reader, other.admin_token, ROSTER, id=theirs))["name"] == "7 Blue"


async def test_remove_users_from_a_class(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    amy, ben, cat = await pupils(db, school, 3)
    blue = await new_class(http, school, "7 Blue")
    art = await new_class(http, school, "Art", "TEACHING")
    await assign(http, school, blue, amy, ben)
    await assign(http, school, art, amy)

    removed = await call(http, school.admin_token, REMOVE, id=blue, users=[str(amy), str(cat)])

    assert removed["errors"] == [] and removed["schoolClass"]["memberCount"] == 1
    assert await memberships(db, school) == {("7 Blue", ben), ("Art", amy)}
    assert await audit_events(db, school, "class.members_removed") == [
        ({amy}, {"class_id": blue, "name": "7 Blue", "kind": "REGISTRATION"})
    ]
    nothing = await call(http, school.admin_token, REMOVE, id=blue, users=[str(cat)])
    assert nothing["errors"] == []
    assert len(await audit_events(db, school, "class.members_removed")) == 1


# Managed schools, rosters and who may do what


async def test_a_managed_schools_classes_can_be_read_but_not_changed(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database
) -> None:
    school = await make_school(owner_engine, db, provider=Provider.HWB)
    [amy] = await pupils(db, school, 1)
    async with school_scope(db, school.id) as session:
        class_id = await insert_class(session, school, "7 Blue")
        await insert_membership(session, school, class_id, amy)

    for query, variables in (
        (CREATE, {"name": "7 Red", "kind": "REGISTRATION"}),
        (RENAME, {"id": str(class_id), "name": "7 Red"}),
        (DELETE, {"id": str(class_id)}),
        (ASSIGN, {"id": str(class_id), "users": [str(amy)]}),
        (REMOVE, {"id": str(class_id), "users": [str(amy)]}),
    ):
        payload = await call(http, school.admin_token, query, **variables)
        assert codes(payload) == ["MANAGED_BY_PROVIDER"], query
        assert "HWB" in payload["errors"][0]["message"]

    assert await call(reader, school.admin_token, CLASSES) == [
        {"id": str(class_id), "name": "7 Blue", "kind": "REGISTRATION", "memberCount": 1}
    ]


async def test_members_are_paged_and_filtered_by_type(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given: five pupils, two teachers and a deleted pupil in one class
    class_pupils = await pupils(db, school, 5)
    teachers = [
        await make_user(db, school, type=UserType.TEACHER, username=f"teacher{n}", surname=f"Teacher{n}")
        for n in range(2)
    ]
    gone = await make_user(db, school, username="gone")
    outsider = await make_user(db, school)
    maths = await new_class(http, school, "Maths", "TEACHING")
    await assign(http, school, maths, *class_pupils, *teachers, gone)
    await assign(http, school, await new_class(http, school, "Art", "TEACHING"), outsider)
    await soft_delete(db, school, gone)
    # when
    seen, after = [], None
    while True:
        page = await call(reader, school.admin_token, ROSTER, id=maths, first=3, after=after)
        seen += [edge["node"]["username"] for edge in page["members"]["edges"]]
        assert page["members"]["totalCount"] == 7 and page["memberCount"] == 7
        if not page["members"]["pageInfo"]["hasNextPage"]:
            break
        after = page["members"]["pageInfo"]["endCursor"]
    # then
    assert seen == [f"pupil{n}" for n in range(5)] + ["teacher0", "teacher1"]
    teaching = await call(reader, school.admin_token, ROSTER, id=maths, type="TEACHER")
    assert [edge["node"]["username"] for edge in teaching["members"]["edges"]] == ["teacher0", "teacher1"]
    assert teaching["members"]["totalCount"] == 2


async def test_member_counts_of_many_classes_cost_a_constant_number_of_statements(
    strawberry_http: httpx.AsyncClient, strawberry_app: Starlette, db: Database, school: SchoolFixture
) -> None:
    # On the Strawberry path: the compiled path answers in one statement whatever the resolvers do.
    [amy] = await pupils(db, school, 1)
    counts = []
    for batch in range(2):
        async with school_scope(db, school.id) as session:
            for n in range(30):
                created = await create_class(
                    session,
                    school_id=school.id,
                    actor=Actor(id=None, label="test"),
                    name=f"Class {batch}-{n}",
                    kind=ClassKind.TEACHING,
                )
                await insert_membership(session, school, created.id, amy, "TEACHING")
        with counting_statements(strawberry_app.state.db.engine) as statements:
            listed = await call(strawberry_http, school.admin_token, "{ classes { name memberCount } }")
        assert len(listed) == 30 * (batch + 1) and {c["memberCount"] for c in listed} == {1}
        counts.append(len(statements))
    assert counts[0] == counts[1]


async def test_teachers_and_api_tokens_read_classes_and_only_admins_change_them(
    http: httpx.AsyncClient, reader: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    [amy] = await pupils(db, school, 1)
    blue = await new_class(http, school, "7 Blue")
    await assign(http, school, blue, amy)
    teacher = await sign_in_as(db, school, await make_user(db, school, type=UserType.TEACHER))
    app_token = await make_api_token(db, school)
    roster = "{ classes { name memberCount members { edges { node { username } } } } }"
    for token in (teacher, app_token):
        assert await call(reader, token, roster) == [
            {"name": "7 Blue", "memberCount": 1, "members": {"edges": [{"node": {"username": "pupil0"}}]}}
        ]
        refused = await graphql(http, ASSIGN, {"id": blue, "users": [str(amy)]}, token=token)
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    pupil = await sign_in_as(db, school, amy)
    mine = await graphql(http, "{ me { registrationClass { name members { totalCount } } } }", token=pupil)
    assert mine["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert mine["errors"][0]["path"] == ["me", "registrationClass", "members"]
    mine = await call(http, pupil, "{ me { registrationClass { name } } }")
    assert mine == {"registrationClass": {"name": "7 Blue"}}


async def test_one_request_sees_its_own_changes(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    amy, ben = await pupils(db, school, 2)
    blue = await new_class(http, school, "7 Blue")
    body = await graphql(
        http,
        """
        mutation ($id: ID!, $amy: ID!, $ben: ID!) {
          first: assignClass(classId: $id, userIds: [$amy]) { schoolClass { memberCount } }
          second: assignClass(classId: $id, userIds: [$ben]) { schoolClass { memberCount } }
        }""",
        {"id": blue, "amy": str(amy), "ben": str(ben)},
        token=school.admin_token,
    )
    assert body["data"] == {
        "first": {"schoolClass": {"memberCount": 1}},
        "second": {"schoolClass": {"memberCount": 2}},
    }


# Placing a user being added (addUser calls this in its own transaction)


async def test_a_new_user_is_placed_in_their_classes(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    [amy] = await pupils(db, school, 1)
    blue = uuid.UUID(await new_class(http, school, "7 Blue"))
    art = uuid.UUID(await new_class(http, school, "Art", "TEACHING"))
    maths = uuid.UUID(await new_class(http, school, "Maths", "TEACHING"))
    async with school_scope(db, school.id) as session:
        await place_new_user(
            session,
            school_id=school.id,
            user_id=amy,
            registration_class_id=blue,
            teaching_class_ids=[art, maths, art],
        )
    assert await memberships(db, school) == {("7 Blue", amy), ("Art", amy), ("Maths", amy)}


async def test_placing_a_new_user_reports_every_wrong_class(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    [amy] = await pupils(db, school, 1)
    blue = uuid.UUID(await new_class(http, school, "7 Blue"))
    art = uuid.UUID(await new_class(http, school, "Art", "TEACHING"))
    unknown = uuid.uuid4()
    with pytest.raises(DomainError) as raised:
        async with school_scope(db, school.id) as session:
            await place_new_user(
                session,
                school_id=school.id,
                user_id=amy,
                registration_class_id=art,
                teaching_class_ids=[blue, unknown],
            )
    assert [(p.code, p.field) for p in raised.value.problems] == [
        (ErrorCode.INVALID_INPUT, "registrationClassId"),
        (ErrorCode.INVALID_INPUT, "teachingClassIds"),
        (ErrorCode.NOT_FOUND, "teachingClassIds"),
    ]
    assert "'Art' is a teaching class" in raised.value.problems[0].message
    assert await memberships(db, school) == set()


# Retrying a transaction that collides with a concurrent one


async def _second_registration_class(
    session: AsyncSession, school: SchoolFixture, user_id: uuid.UUID
) -> None:
    """What a concurrent move that slipped past the row locks would run into: the one-registration-class
    index."""
    class_id = await insert_class(session, school, f"Extra {uuid.uuid4().hex[:6]}")
    await insert_membership(session, school, class_id, user_id)


async def test_a_collision_is_retried_from_the_start(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    [amy] = await pupils(db, school, 1)
    await assign(http, school, await new_class(http, school, "7 Blue"), amy)
    attempts: list[int] = []

    async def change(session: AsyncSession) -> int:
        attempts.append(1)
        if len(attempts) == 1:
            await _second_registration_class(session, school, amy)
        return len(attempts)

    assert await with_retries(lambda: school_scope(db, school.id), change) == 2
    assert len(await memberships(db, school)) == 1


async def test_a_collision_that_outlasts_every_attempt_is_a_clear_error(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    [amy] = await pupils(db, school, 1)
    await assign(http, school, await new_class(http, school, "7 Blue"), amy)
    attempts: list[int] = []

    async def change(session: AsyncSession) -> None:
        attempts.append(1)
        await _second_registration_class(session, school, amy)

    with pytest.raises(DomainError) as raised:
        await with_retries(lambda: school_scope(db, school.id), change, attempts=3)
    assert [p.code for p in raised.value.problems] == [ErrorCode.CONCURRENT_CHANGE] and len(attempts) == 3


async def test_other_database_errors_are_not_retried(db: Database, school: SchoolFixture) -> None:
    attempts: list[int] = []

    async def change(session: AsyncSession) -> None:
        attempts.append(1)
        await session.execute(text("select 1 / 0"))

    with pytest.raises(DBAPIError):
        await with_retries(lambda: school_scope(db, school.id), change)
    assert len(attempts) == 1
