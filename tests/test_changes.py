"""The change feed: every writer records, in its own transaction; a follower never misses a committed change,
however many writers commit in whatever order; deletions are always learnt of; an old cursor must resync.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from db import changes
from db.api_tokens import ApiScope
from db.audit import Actor
from db.embedded import EmbeddedServer
from db.engine import Database
from db.maintenance import MAINTENANCE, purge_school
from db.models import Change, User, UserType
from db.scope import bind_school, school_scope
from db.users import create_user
from tests.conftest import SchoolFixture, graphql, make_api_token, make_school, make_user
from tests.test_imports import confirm, preview
from tests.test_scim import GROUP, USER, Provisioning, patch_op

NODE = """cursor kind id userId classId membershipKind operation at actor
  user { id username firstName surname type email deletedAt }
  schoolClass { id name kind }"""
FEED = f"""query ($after: String, $first: Int) {{
  changes(after: $after, first: $first) {{
    pageInfo {{ hasNextPage endCursor }} edges {{ cursor node {{ {NODE} }} }}
  }}
}}"""
CURSOR = "{ changesCursor }"
ROSTER = """{
  users(filter: {status: ALL}, first: 500) {
    edges { node { id username firstName surname type email deletedAt
                   registrationClass { id } teachingClasses { id } } }
  }
  classes { id name kind }
}"""
ADD_USER = (
    """mutation ($input: AddUserInput!) { addUser(input: $input) { user { id version } errors { code } } }"""
)
EDIT = """mutation ($id: ID!, $v: Int!, $field: UserField!, $value: String!) {
  updateUserField(userId: $id, expectedVersion: $v, field: $field, value: $value) { user { version } errors { code } }
}"""
CREATE_CLASS = """mutation ($name: String!, $kind: ClassKind!) {
  createClass(name: $name, kind: $kind) { schoolClass { id } errors { code } } }"""
RENAME_CLASS = (
    """mutation ($id: ID!, $name: String!) { renameClass(classId: $id, name: $name) { errors { code } } }"""
)
DELETE_CLASS = """mutation ($id: ID!) { deleteClass(classId: $id) { errors { code } } }"""
ASSIGN = """mutation ($id: ID!, $users: [ID!]!) { assignClass(classId: $id, userIds: $users) { errors { code } } }"""
REMOVE = """mutation ($id: ID!, $users: [ID!]!) { removeFromClass(classId: $id, userIds: $users) { errors { code } } }"""
DELETE_USERS = """mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code } } }"""
RESTORE_USERS = """mutation ($ids: [ID!]!) { restoreUsers(userIds: $ids) { errors { code } } }"""
ROTATE = """mutation ($ids: [ID!]!) { rotateLoginCodes(userIds: $ids) { errors { code } } }"""


async def ok(http: httpx.AsyncClient, token: str, query: str, **variables: Any) -> dict[str, Any]:
    body = await graphql(http, query, variables, token=token)
    assert "errors" not in body, body
    (payload,) = body["data"].values()
    assert not payload.get("errors"), payload
    result: dict[str, Any] = payload
    return result


async def raw_records(db: Database, school_id: uuid.UUID) -> list[tuple[Any, ...]]:
    """Every record of the school, in the feed's order: (kind, entity, class, operation, actor)."""
    async with school_scope(db, school_id) as session:
        rows = await session.execute(
            text("select kind, entity_id, class_id, operation, actor from changes order by xid, position")
        )
        return [tuple(row) for row in rows]


class Recorder:
    """The records each step adds."""

    def __init__(self, db: Database, school_id: uuid.UUID) -> None:
        self.db, self.school_id, self.seen = db, school_id, 0

    async def new(self) -> set[tuple[Any, ...]]:
        records = await raw_records(self.db, self.school_id)
        added, self.seen = records[self.seen :], len(records)
        return set(added)


async def test_every_writer_records_its_changes_with_its_actor(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, migrated: EmbeddedServer
) -> None:
    school = await make_school(owner_engine, db)
    token = school.admin_token
    admin = f"user:{school.admin_id}"
    steps = Recorder(db, school.id)
    # `rollcall school create`, as the owner role.
    assert await steps.new() == {("USER", school.admin_id, None, "UPSERT", "rollcall school create")}

    # GraphQL, as the admin.
    pupil = uuid.UUID(
        (await ok(http, token, ADD_USER, input={"username": "amy", "type": "PUPIL", "password": "cat-1"}))[
            "user"
        ]["id"]
    )
    assert await steps.new() == {("USER", pupil, None, "UPSERT", admin)}
    await ok(http, token, EDIT, id=str(pupil), v=1, field="FIRST_NAME", value="Amy")
    assert await steps.new() == {("USER", pupil, None, "UPSERT", admin)}
    p3, p4, choir = [
        uuid.UUID((await ok(http, token, CREATE_CLASS, name=name, kind=kind))["schoolClass"]["id"])
        for name, kind in (("P3", "REGISTRATION"), ("P4", "REGISTRATION"), ("Choir", "TEACHING"))
    ]
    assert await steps.new() == {("CLASS", c, None, "UPSERT", admin) for c in (p3, p4, choir)}
    await ok(http, token, ASSIGN, id=str(p3), users=[str(pupil)])
    await ok(http, token, ASSIGN, id=str(choir), users=[str(pupil)])
    # a class change is a change to its members too: their version and updatedAt move
    assert await steps.new() == {
        ("MEMBERSHIP", pupil, p3, "UPSERT", admin),
        ("MEMBERSHIP", pupil, choir, "UPSERT", admin),
        ("USER", pupil, None, "UPSERT", admin),
    }
    await ok(http, token, ASSIGN, id=str(p4), users=[str(pupil)])  # a move
    assert await steps.new() == {
        ("MEMBERSHIP", pupil, p3, "DELETE", admin),
        ("MEMBERSHIP", pupil, p4, "UPSERT", admin),
        ("USER", pupil, None, "UPSERT", admin),
    }
    await ok(http, token, RENAME_CLASS, id=str(choir), name="Singers")
    assert await steps.new() == {("CLASS", choir, None, "UPSERT", admin)}
    await ok(http, token, REMOVE, id=str(p4), users=[str(pupil)])
    assert await steps.new() == {
        ("MEMBERSHIP", pupil, p4, "DELETE", admin),
        ("USER", pupil, None, "UPSERT", admin),
    }
    await ok(http, token, DELETE_USERS, ids=[str(pupil)])
    assert await steps.new() == {("USER", pupil, None, "DELETE", admin)}
    await ok(http, token, RESTORE_USERS, ids=[str(pupil)])
    assert await steps.new() == {("USER", pupil, None, "UPSERT", admin)}
    # Rotating login codes changes nothing the feed reports.
    await ok(http, token, ROTATE, ids=[str(pupil)])
    assert await steps.new() == set()
    await ok(http, token, DELETE_CLASS, id=str(choir))  # its membership goes with it
    assert await steps.new() == {
        ("CLASS", choir, None, "DELETE", admin),
        ("MEMBERSHIP", pupil, choir, "DELETE", admin),
    }

    # A roster import, applied by the admin.
    job = (
        await preview(
            http,
            school,
            b"username,first_name,surname,type,registration_class\r\namy,Amy,Brown,PUPIL,P3\r\n"
            b"ben,Ben,Clarke,PUPIL,P5\r\n",
        )
    )["job"]
    assert (await confirm(http, school, job["id"]))["errors"] == []
    async with school_scope(db, school.id) as session:
        ben = (await session.execute(text("select id from users where username = 'ben'"))).scalar_one()
        p5 = (await session.execute(text("select id from classes where name = 'P5'"))).scalar_one()
    assert await steps.new() == {
        ("CLASS", p5, None, "UPSERT", admin),
        ("USER", ben, None, "UPSERT", admin),
        ("USER", pupil, None, "UPSERT", admin),
        ("MEMBERSHIP", ben, p5, "UPSERT", admin),
        ("MEMBERSHIP", pupil, p3, "UPSERT", admin),
    }

    # The retention purge, as the owner role: the user and their memberships go.
    await ok(http, token, DELETE_USERS, ids=[str(ben)])
    assert await steps.new() == {("USER", ben, None, "DELETE", admin)}
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, school.id, MAINTENANCE)
        assert await purge_school(session, school.id, timedelta(0)) == 1
    assert await steps.new() == {
        ("USER", ben, None, "DELETE", "rollcall maintenance"),
        ("MEMBERSHIP", ben, p5, "DELETE", "rollcall maintenance"),
    }

    # SCIM, as the school's provider (the school is managed from now on).
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, school.id)
        await session.execute(text("update schools set provider = 'C2K'"))
    scim = Provisioning(school, await make_api_token(db, school, [ApiScope.PROVISION]), http)
    async with school_scope(db, school.id) as session:
        token_id = (
            await session.execute(text("select id from api_tokens where 'PROVISION' = any(scopes)"))
        ).scalar_one()
    provider = f"provisioning-token:{token_id}"
    cara = uuid.UUID((await scim.create_user("cara", name={"givenName": "Cara"}))["id"])
    group = uuid.UUID((await scim.create_group("Band", members=(str(cara),)))["id"])
    assert await steps.new() == {
        ("USER", cara, None, "UPSERT", provider),
        ("CLASS", group, None, "UPSERT", provider),
        ("MEMBERSHIP", cara, group, "UPSERT", provider),
    }
    await scim.patch(f"/Users/{cara}", {"op": "replace", "path": "name.familyName", "value": "Doyle"})
    assert await steps.new() == {("USER", cara, None, "UPSERT", provider)}
    await scim.ok("DELETE", f"/Users/{cara}", status=204)
    assert ("USER", cara, None, "DELETE", provider) in await steps.new()

    # Whatever writes, even SQL of its own: the triggers record it, with the actor bound to the transaction.
    async with school_scope(db, school.id, Actor(id=None, label="a script")) as session:
        await session.execute(update(User).where(User.id == pupil).values(surname="Brown-Smith"))
    assert await steps.new() == {("USER", pupil, None, "UPSERT", "a script")}


async def test_a_rolled_back_change_leaves_no_record(db: Database, school: SchoolFixture) -> None:
    before = await raw_records(db, school.id)
    with pytest.raises(RuntimeError):
        async with school_scope(db, school.id) as session:
            await session.execute(update(User).where(User.id == school.admin_id).values(surname="Gone"))
            raise RuntimeError("rolled back")
    assert await raw_records(db, school.id) == before


async def test_the_application_role_can_read_the_feed_but_never_write_it(
    db: Database, school: SchoolFixture
) -> None:
    for statement in (
        "update changes set operation = 'DELETE'",
        "delete from changes",
        (
            "insert into changes (school_id, kind, entity_id, operation) "
            "select school_id, 'USER', gen_random_uuid(), 'DELETE' from changes limit 1"
        ),
    ):
        with pytest.raises(Exception, match="permission denied"):
            async with school_scope(db, school.id) as session:
                await session.execute(text(statement))


# Ordering: a reader never passes a change that has yet to commit


async def test_a_change_committed_out_of_order_is_not_passed_by_a_reader(
    db: Database, school: SchoolFixture
) -> None:
    """T1 writes first (the lower position) and commits last: a plain sequence would let a reader skip it."""
    async with school_scope(db, school.id) as reader:
        start = await changes.current_cursor(reader)
    first_writer = db.sessionmaker()
    await first_writer.begin()
    await bind_school(first_writer, school.id)
    await first_writer.execute(update(User).where(User.id == school.admin_id).values(surname="First"))
    second = await make_user(db, school)  # commits at once, after the first took its position
    async with school_scope(db, school.id) as reader:
        page = await changes.read_changes(reader, school_id=school.id, after=start)
        held = (await reader.execute(text("select entity_id from changes order by position"))).scalars()
        assert list(held)[-1] == second  # committed and recorded, but behind a transaction still running
    assert page.changes == [] and not page.has_next_page
    await first_writer.commit()
    await first_writer.close()
    async with school_scope(db, school.id) as reader:
        resumed = await changes.read_changes(reader, school_id=school.id, after=page.end_cursor)
    # The reader resumes from where it stopped and misses neither, the first one's first.
    assert [(c.entity_id, c.operation) for c in resumed.changes] == [
        (school.admin_id, changes.Operation.UPSERT),
        (second, changes.Operation.UPSERT),
    ]


async def test_concurrent_writers_and_a_polling_reader_agree_on_every_committed_change(
    owner_engine: AsyncEngine, migrated: EmbeddedServer
) -> None:
    """Many transactions at once, each sleeping a random time before and after writing (so they take their
    positions and commit in different orders), some rolled back; a reader polling all along, a small page at a
    time, ends with exactly the committed changes, each once."""
    writers_db = Database(migrated.urls().app, pool_size=12)
    school = await make_school(owner_engine, writers_db)
    rng = random.Random(20261206)
    committed: list[uuid.UUID] = []
    attempted: list[uuid.UUID] = []
    running = asyncio.Semaphore(10)
    done = asyncio.Event()

    async def write(n: int) -> None:
        async with running:
            try:
                async with school_scope(
                    writers_db, school.id, Actor(id=None, label=f"writer {n}")
                ) as session:
                    # Some take a transaction id before their position, by writing something else first.
                    if n % 3 == 0:
                        await session.execute(text("select pg_current_xact_id()"))
                    await asyncio.sleep(rng.random() * 0.05)
                    user = await create_user(
                        session, school_id=school.id, username=f"w{n}", password_hash="x", type=UserType.PUPIL
                    )
                    attempted.append(user.id)
                    await asyncio.sleep(rng.random() * 0.08)
                    if n % 7 == 3:
                        raise RuntimeError("rolled back")
                committed.append(user.id)
            except RuntimeError:
                pass

    seen: list[tuple[uuid.UUID, str]] = []
    polls = 0

    async def read() -> None:
        nonlocal polls
        async with school_scope(writers_db, school.id) as session:
            cursor = await changes.current_cursor(session)
        while True:
            finished = done.is_set()
            async with school_scope(writers_db, school.id) as session:
                page = await changes.read_changes(
                    session, school_id=school.id, after=cursor, first=5, collapse=False
                )
            polls += 1
            seen.extend((c.entity_id, c.operation.value) for c in page.changes)
            cursor = page.end_cursor
            if finished and not page.has_next_page:
                return
            await asyncio.sleep(0.005)

    reader = asyncio.ensure_future(read())
    await asyncio.gather(*(write(n) for n in range(80)))
    done.set()
    await reader
    await writers_db.dispose()
    assert sorted(seen) == sorted((user_id, "UPSERT") for user_id in committed), "each committed change, once"
    rolled_back = set(attempted) - set(committed)
    assert len(rolled_back) == len([n for n in range(80) if n % 7 == 3])
    assert polls > 10


# A consumer that follows the feed ends with the roster the database holds


class Mirror:
    """What a roster app keeps: users, classes and memberships, from one full read and then the feed."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.classes: dict[str, dict[str, Any]] = {}
        self.memberships: set[tuple[str, str]] = set()
        self.cursor = ""

    async def start(self, http: httpx.AsyncClient, token: str, before_read: Any = None) -> None:
        self.cursor = (await graphql(http, CURSOR, token=token))["data"]["changesCursor"]
        if before_read is not None:
            await before_read()  # a change between the cursor and the read is not lost either
        body = await graphql(http, ROSTER, token=token)
        for edge in body["data"]["users"]["edges"]:
            node = edge["node"]
            self.users[node["id"]] = _user_fields(node)
            for school_class in [node["registrationClass"], *node["teachingClasses"]]:
                if school_class:
                    self.memberships.add((node["id"], school_class["id"]))
        self.classes = {c["id"]: {"name": c["name"], "kind": c["kind"]} for c in body["data"]["classes"]}

    async def follow(self, http: httpx.AsyncClient, token: str, first: int = 7) -> int:
        read = 0
        while True:
            body = await graphql(http, FEED, {"after": self.cursor, "first": first}, token=token)
            assert "errors" not in body, body
            feed = body["data"]["changes"]
            for edge in feed["edges"]:
                self.apply(edge["node"])
                read += 1
            self.cursor = feed["pageInfo"]["endCursor"]
            if not feed["pageInfo"]["hasNextPage"]:
                return read

    def apply(self, change: dict[str, Any]) -> None:
        match change["kind"]:
            case "USER":
                if change["user"] is None:
                    assert change["operation"] == "DELETE"
                    self.users.pop(change["userId"], None)
                else:
                    self.users[change["userId"]] = _user_fields(change["user"])
            case "CLASS":
                if change["operation"] == "DELETE":
                    self.classes.pop(change["classId"], None)
                elif change["schoolClass"] is not None:
                    self.classes[change["classId"]] = {
                        "name": change["schoolClass"]["name"],
                        "kind": change["schoolClass"]["kind"],
                    }
            case "MEMBERSHIP":
                pair = (change["userId"], change["classId"])
                if change["operation"] == "DELETE":
                    self.memberships.discard(pair)
                else:
                    self.memberships.add(pair)


def _user_fields(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "username": node["username"],
        "firstName": node["firstName"],
        "surname": node["surname"],
        "type": node["type"],
        "email": node["email"],
        "deleted": node["deletedAt"] is not None,
    }


async def database_roster(
    db: Database, school_id: uuid.UUID
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], set[tuple[str, str]]]:
    async with school_scope(db, school_id) as session:
        users = await session.execute(
            text("select id, username, first_name, surname, type, email, deleted_at from users")
        )
        classes = await session.execute(text("select id, name, kind from classes"))
        memberships = await session.execute(text("select user_id, class_id from class_memberships"))
        return (
            {
                str(u.id): {
                    "username": u.username,
                    "firstName": u.first_name,
                    "surname": u.surname,
                    "type": u.type,
                    "email": u.email,
                    "deleted": u.deleted_at is not None,
                }
                for u in users
            },
            {str(c.id): {"name": c.name, "kind": c.kind} for c in classes},
            {(str(m.user_id), str(m.class_id)) for m in memberships},
        )


async def assert_mirrors(mirror: Mirror, db: Database, school_id: uuid.UUID) -> None:
    users, classes, memberships = await database_roster(db, school_id)
    assert mirror.users == users
    assert mirror.classes == classes
    assert mirror.memberships == memberships


async def test_a_consumer_following_the_feed_ends_with_the_roster_the_database_holds(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database
) -> None:
    school = await make_school(owner_engine, db)
    admin = school.admin_token
    app = await make_api_token(db, school, [ApiScope.ROSTER_READ])
    rng = random.Random(7)
    classes = [
        (await ok(http, admin, CREATE_CLASS, name=name, kind=kind))["schoolClass"]["id"]
        for name, kind in (("P1", "REGISTRATION"), ("P2", "REGISTRATION"), ("Art", "TEACHING"))
    ]
    pupils: list[str] = []

    async def add(n: int) -> None:
        user = await ok(
            http, admin, ADD_USER, input={"username": f"p{n}", "type": "PUPIL", "password": "cat-123"}
        )
        pupils.append(user["user"]["id"])

    for n in range(6):
        await add(n)
    mirror = Mirror()
    await mirror.start(http, app, before_read=lambda: add(100))
    await assert_mirrors(mirror, db, school.id)

    async def versions() -> dict[str, int]:
        async with school_scope(db, school.id) as session:
            rows = await session.execute(text("select id, version from users"))
            return {str(r.id): r.version for r in rows}

    for round_ in range(6):
        # Adds, edits, moves, deletes and restores, in a different mix each round.
        await add(round_ + 10)
        for user_id in rng.sample(pupils, 3):
            await graphql(
                http,
                EDIT,
                {
                    "id": user_id,
                    "v": (await versions())[user_id],
                    "field": "SURNAME",
                    "value": f"S{rng.random()}",
                },
                token=admin,
            )
        await graphql(http, ASSIGN, {"id": rng.choice(classes), "users": rng.sample(pupils, 3)}, token=admin)
        await graphql(http, REMOVE, {"id": rng.choice(classes), "users": rng.sample(pupils, 2)}, token=admin)
        await graphql(http, DELETE_USERS, {"ids": rng.sample(pupils, 1)}, token=admin)
        await graphql(http, RESTORE_USERS, {"ids": rng.sample(pupils, 1)}, token=admin)
        if round_ == 2:
            await ok(http, admin, RENAME_CLASS, id=classes[2], name="Art & Design")
            classes.append(
                (await ok(http, admin, CREATE_CLASS, name="Choir", kind="TEACHING"))["schoolClass"]["id"]
            )
        if round_ == 3:
            await ok(http, admin, DELETE_CLASS, id=classes.pop())
        if round_ % 2:
            await mirror.follow(http, app)  # the consumer reads now and then, not after every change

    # An import that moves, creates, edits and removes pupils.
    job = (
        await preview(
            http,
            school,
            b"username,first_name,surname,type,registration_class,teaching_classes\r\n"
            b"p0,Zoe,New,PUPIL,P9,Art & Design\r\np1,Yan,Moved,PUPIL,P2,\r\nfresh,Fay,Fresh,PUPIL,P9,\r\n",
            remove=True,
        )
    )["job"]
    assert (await confirm(http, school, job["id"]))["errors"] == []
    await mirror.follow(http, app)
    await assert_mirrors(mirror, db, school.id)

    # The school's users come from a provider from now on: SCIM creates, changes, groups and deletes.
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, school.id)
        await session.execute(text("update schools set provider = 'HWB'"))
    scim = Provisioning(school, await make_api_token(db, school, [ApiScope.PROVISION]), http)
    made = [(await scim.create_user(f"s{n}", name={"givenName": f"S{n}"}))["id"] for n in range(4)]
    band = (await scim.create_group("Band", members=tuple(made[:3])))["id"]
    await scim.patch(f"/Users/{made[0]}", {"op": "replace", "path": "name.familyName", "value": "Changed"})
    await scim.ok(
        "PATCH", f"/Groups/{band}", patch_op({"op": "remove", "path": f'members[value eq "{made[1]}"]'})
    )
    await scim.ok(
        "PUT",
        f"/Groups/{band}",
        {"schemas": [GROUP], "displayName": "Brass band", "members": [{"value": made[3]}]},
    )
    await scim.ok("DELETE", f"/Users/{made[2]}", status=204)
    await scim.ok(
        "POST", "/Users", {"schemas": [USER], "userName": "late", "userType": "Teacher"}, status=201
    )
    await mirror.follow(http, app, first=3)
    await assert_mirrors(mirror, db, school.id)

    # The retention purge: purged users (and their memberships) leave the mirror too.
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, school.id, MAINTENANCE)
        assert await purge_school(session, school.id, timedelta(0)) > 0
    await mirror.follow(http, app)
    await assert_mirrors(mirror, db, school.id)
    assert any(user["deleted"] for user in mirror.users.values()) is False


async def test_changes_between_two_reads_are_collapsed_to_the_latest(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    token = school.admin_token
    cursor = (await graphql(http, CURSOR, token=token))["data"]["changesCursor"]
    pupil = (
        await ok(http, token, ADD_USER, input={"username": "kim", "type": "PUPIL", "password": "cat-1"})
    )["user"]["id"]
    await ok(http, token, EDIT, id=pupil, v=1, field="SURNAME", value="Lee")
    await ok(http, token, DELETE_USERS, ids=[pupil])
    body = await graphql(http, FEED, {"after": cursor}, token=token)
    edges = body["data"]["changes"]["edges"]
    assert [(e["node"]["kind"], e["node"]["id"], e["node"]["operation"]) for e in edges] == [
        ("USER", pupil, "DELETE")
    ]
    node = edges[0]["node"]
    assert node["user"]["surname"] == "Lee" and node["user"]["deletedAt"] is not None
    assert node["actor"] == f"user:{school.admin_id}" and edges[0]["cursor"] == node["cursor"]
    # The end cursor moves on even with nothing new: polling keeps a fresh cursor.
    end = body["data"]["changes"]["pageInfo"]["endCursor"]
    again = (await graphql(http, FEED, {"after": end}, token=token))["data"]["changes"]
    assert again["edges"] == [] and again["pageInfo"]["hasNextPage"] is False


# Retention


async def _backdate(owner_engine: AsyncEngine, school_id: uuid.UUID, days: int) -> None:
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, school_id)
        await session.execute(update(Change).values(at=Change.at - timedelta(days=days)))


async def test_a_cursor_from_before_purged_records_must_resync(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    token = school.admin_token
    lagging = (await graphql(http, CURSOR, token=token))["data"]["changesCursor"]
    await make_user(db, school)
    await make_user(db, school)
    await _backdate(owner_engine, school.id, 31)
    current = (await graphql(http, CURSOR, token=token))["data"]["changesCursor"]
    newer = await make_user(db, school)
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, school.id, MAINTENANCE)
        assert await changes.purge_changes(session, school.id, timedelta(days=30)) == 3  # the admin's too
    refused = await graphql(http, FEED, {"after": lagging}, token=token)
    assert refused["data"] is None
    (error,) = refused["errors"]
    assert error["extensions"]["code"] == "RESYNC_REQUIRED"
    assert "read the whole roster again" in error["message"]
    # From the beginning of what is kept, and from a cursor after the purged records: all of it, nothing less.
    for after in (None, current):
        kept = (await graphql(http, FEED, {"after": after}, token=token))["data"]["changes"]["edges"]
        assert [e["node"]["userId"] for e in kept] == [str(newer)]


async def test_a_cursor_older_than_the_feed_retention_must_resync(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    token = school.admin_token
    body = await graphql(
        http,
        "mutation { updateSchoolSettings(input: {feedRetentionDays: 2}) { school { feedRetentionDays } errors { code field } } }",
        token=token,
    )
    assert body["data"]["updateSchoolSettings"] == {"school": {"feedRetentionDays": 2}, "errors": []}
    cursor = (await graphql(http, CURSOR, token=token))["data"]["changesCursor"]
    # The same place in the feed, as it was given out three days ago (a cursor carries when it was issued).
    point, issued = changes._decode(cursor)
    old = changes._encode(point, issued - timedelta(days=3))
    fresh = changes._encode(point, issued - timedelta(days=1))
    assert (await graphql(http, FEED, {"after": old}, token=token))["errors"][0]["extensions"]["code"] == (
        "RESYNC_REQUIRED"
    )
    assert "errors" not in await graphql(http, FEED, {"after": fresh}, token=token)
    bad = await graphql(
        http,
        "mutation { updateSchoolSettings(input: {feedRetentionDays: 0}) { errors { code field } } }",
        token=token,
    )
    assert bad["data"]["updateSchoolSettings"]["errors"] == [
        {"code": "INVALID_INPUT", "field": "feedRetentionDays"}
    ]


@pytest.mark.parametrize(
    "after", ["nope", "WyIxIiwiMiJd", "WyItMSIsIjAiLCIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIl0"]
)
async def test_a_cursor_the_feed_did_not_give_out_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture, after: str
) -> None:
    body = await graphql(http, FEED, {"after": after}, token=school.admin_token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST", body


@pytest.mark.parametrize("first", [0, 1001, -5])
async def test_a_page_size_out_of_range_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture, first: int
) -> None:
    body = await graphql(http, FEED, {"first": first}, token=school.admin_token)
    assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST", body


async def test_the_feed_respects_the_cost_limit(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    query = """{ changes(first: 1000) { edges { node { user { teachingClasses { members(first: 500) {
      edges { node { id } } } } } } } } }"""
    body = await graphql(http, query, token=school.admin_token)
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"


async def test_each_school_follows_only_its_own_feed(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    other = await make_school(owner_engine, db)
    theirs = await make_user(db, other)
    ours = await make_user(db, school)
    body = await graphql(http, FEED, {}, token=school.admin_token)
    ids = {edge["node"]["userId"] for edge in body["data"]["changes"]["edges"]}
    assert str(ours) in ids and str(theirs) not in ids and str(other.admin_id) not in ids


def test_a_cursor_names_its_place_and_when_it_was_issued() -> None:
    now = datetime.fromisoformat("2026-12-06T10:00:00+00:00")
    point, issued = changes._decode(changes._encode(changes._Point(123, 45), now))
    assert (point, issued) == (changes._Point(123, 45), now)
