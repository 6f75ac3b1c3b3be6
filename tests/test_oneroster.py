"""OneRoster 1.2 over real HTTP: the token endpoint, every endpoint against the OpenAPI description, the
protocol's parameters, the mapping, the school's boundary under filters, and a consumer's sync."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import ApiScope, create_api_token, revoke_api_token
from db.audit import Actor
from db.classes import assign_to_class, create_class
from db.engine import Database
from db.models import ClassKind, UserType
from db.oauth import ROSTER_CORE_READONLY, ROSTER_READONLY
from db.rostering import school_year
from db.scope import school_scope
from tests.conftest import SchoolFixture, graphql, make_school, make_user
from tests.oneroster_spec import BASE, NESTED, SERVED, violations

GRADEBOOK = "https://purl.imsglobal.org/spec/or/v1p2/scope/gradebook.readonly"


async def make_client(
    db: Database, school: SchoolFixture, scopes: list[ApiScope] | None = None
) -> tuple[str, str]:
    """An API client: its id and its secret."""
    async with school_scope(db, school.id) as session:
        secret, token = await create_api_token(
            session,
            school_id=school.id,
            actor=Actor(id=school.admin_id, label="admin"),
            name="Roster app",
            scopes=scopes or [ApiScope.ROSTER_READ],
        )
    return str(token.id), secret


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def access_token(http: httpx.AsyncClient, client: tuple[str, str], scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    response = await http.post("/oauth/token", data=form, headers=basic(*client))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def get(http: httpx.AsyncClient, token: str | None, path: str, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.get(BASE + path, params=params, headers=headers)


async def read(http: httpx.AsyncClient, token: str, path: str, **params: Any) -> dict[str, Any]:
    """A 200 answer, checked against the OpenAPI description."""
    response = await get(http, token, path, **params)
    assert response.status_code == 200, (path, response.text)
    body: dict[str, Any] = response.json()
    assert violations(BASE + path, body) == [], (path, body)
    return body


def ids(body: dict[str, Any], key: str) -> set[str]:
    return {item["sourcedId"] for item in body[key]}


@dataclass(frozen=True)
class Roster:
    school: SchoolFixture
    token: str
    pupils: list[str]
    teacher: str
    room: str  # 7A, registration: pupils 0 and 1, the teacher
    maths: str  # Maths, teaching: pupil 0, the teacher


async def roster(owner_engine: AsyncEngine, db: Database, http: httpx.AsyncClient) -> Roster:
    school = await make_school(owner_engine, db)
    pupils = [
        await make_user(db, school, first_name=name, surname="Lee", external_id=external)
        for name, external in (("Ann", "C2K-1"), ("Bob", None), ("Cat", None))
    ]
    teacher = await make_user(db, school, type=UserType.TEACHER, first_name="Tess", email="tess@example.org")
    async with school_scope(db, school.id) as session:
        actor = Actor(id=school.admin_id, label="admin")
        room = await create_class(
            session, school_id=school.id, actor=actor, name="7A", kind=ClassKind.REGISTRATION
        )
        maths = await create_class(
            session, school_id=school.id, actor=actor, name="Maths", kind=ClassKind.TEACHING
        )
        await assign_to_class(
            session,
            school_id=school.id,
            actor=actor,
            class_id=room.id,
            user_ids=[pupils[0], pupils[1], teacher],
        )
        await assign_to_class(
            session, school_id=school.id, actor=actor, class_id=maths.id, user_ids=[pupils[0], teacher]
        )
    token = await access_token(http, await make_client(db, school))
    return Roster(school, token, [str(p) for p in pupils], str(teacher), str(room.id), str(maths.id))


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine, db: Database, server_url: str) -> Roster:
    async with httpx.AsyncClient(base_url=server_url) as http:
        return await roster(owner_engine, db, http)


# The token endpoint.


async def test_a_client_gets_a_short_lived_bearer_token_by_basic_or_form(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    client_id, secret = await make_client(db, school)
    by_basic = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )
    by_form = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    for response in (by_basic, by_form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert body["scope"].split() == [ROSTER_CORE_READONLY, ROSTER_READONLY]
        assert response.headers["cache-control"] == "no-store"
    assert by_basic.json()["access_token"] != by_form.json()["access_token"]
    # only the token's hash is kept
    async with school_scope(db, school.id) as session:
        stored = (await session.execute(text("select token_hash from oauth_access_tokens"))).scalars().all()
    assert len(stored) == 2 and all(len(h) == 32 for h in stored)
    assert by_basic.json()["access_token"].encode() not in stored


async def test_scopes_the_client_may_not_have_are_left_out_not_refused(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    client = await make_client(db, school)
    asked = f"{GRADEBOOK} {ROSTER_CORE_READONLY}"
    response = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials", "scope": asked}, headers=basic(*client)
    )
    assert response.status_code == 200 and response.json()["scope"] == ROSTER_CORE_READONLY
    # nothing grantable at all is invalid_scope
    response = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials", "scope": GRADEBOOK}, headers=basic(*client)
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    "case", ["wrong secret", "other client's id", "provisioning token", "session token", "unknown id"]
)
async def test_wrong_credentials_are_invalid_client(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, case: str
) -> None:
    school = await make_school(owner_engine, db)
    client_id, secret = await make_client(db, school)
    other_id, _ = await make_client(db, school)
    credentials = {
        "wrong secret": (client_id, secret[:-2] + "xx"),
        "other client's id": (other_id, secret),
        "provisioning token": await _provisioning_client(owner_engine, db),
        "session token": (client_id, school.admin_token),
        "unknown id": (str(uuid.uuid4()), secret),
    }[case]
    response = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(*credentials)
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


async def _provisioning_client(owner_engine: AsyncEngine, db: Database) -> tuple[str, str]:
    from db.models import Provider

    managed = await make_school(owner_engine, db, provider=Provider.C2K)
    return await make_client(db, managed, [ApiScope.PROVISION])


@pytest.mark.parametrize(
    "form, error",
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "client_id": "x"}, "invalid_request"),
    ],
)
async def test_malformed_token_requests_get_the_rfc_errors(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, form: dict[str, str], error: str
) -> None:
    client = await make_client(db, school)
    response = await http.post("/oauth/token", data=form, headers=basic(*client))
    assert response.status_code == 400 and response.json()["error"] == error, response.text


async def test_token_attempts_are_throttled_like_sign_in(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    client_id, _ = await make_client(db, school)
    address = {"X-Forwarded-For": "2001:db8:0a11::1"}
    statuses = []
    for _ in range(12):
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": "rca_wrong"},
            headers=address,
        )
        statuses.append(response.status_code)
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429], statuses


async def test_revoking_the_client_ends_its_access_tokens_on_the_next_request(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    client_id, secret = await make_client(db, school)
    token = await access_token(http, (client_id, secret))
    assert (await get(http, token, "/orgs")).status_code == 200
    async with school_scope(db, school.id) as session:
        await revoke_api_token(
            session,
            school_id=school.id,
            token_id=uuid.UUID(client_id),
            actor=Actor(id=school.admin_id, label="a"),
        )
    response = await get(http, token, "/orgs")
    assert response.status_code == 401, response.text
    assert response.json()["imsx_codeMajor"] == "failure"


async def test_an_expired_access_token_is_refused(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    token = await access_token(http, await make_client(db, school))
    async with owner_engine.begin() as connection:
        await connection.execute(text("select set_config('app.school_id', :s, true)"), {"s": str(school.id)})
        await connection.execute(
            text("update oauth_access_tokens set expires_at = now() - interval '1 second'")
        )
    assert (await get(http, token, "/orgs")).status_code == 401


async def test_an_access_token_reads_oneroster_only(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    client_id, secret = await make_client(db, school)
    token = await access_token(http, (client_id, secret))
    body = await graphql(http, "{ users { totalCount } }", token=token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    # and the API token itself is not a OneRoster token
    assert (await get(http, secret, "/orgs")).status_code == 403


# Every endpoint, against the description.


async def test_every_endpoint_answers_as_the_description_says(http: httpx.AsyncClient, world: Roster) -> None:
    school = world.school
    term = (await read(http, world.token, "/terms"))["academicSessions"][0]["sourcedId"]
    course = (await read(http, world.token, f"/classes/{world.maths}"))["class"]["course"]["sourcedId"]
    parents = {
        "schools": str(school.id),
        "classes": world.room,
        "teachers": world.teacher,
        "students": world.pupils[0],
        "users": world.pupils[0],
        "terms": term,
        "courses": course,
    }
    for name in SERVED:
        listed = await read(http, world.token, f"/{name}")
        key = next(iter(listed))
        assert listed[key], name
        for item in listed[key]:
            one = await read(http, world.token, f"/{name}/{item['sourcedId']}")
            assert next(iter(one.values())) == item
    for parent, child, _ in NESTED:
        await read(http, world.token, f"/{parent}/{parents[parent]}/{child}")


async def test_the_mapping(http: httpx.AsyncClient, world: Roster) -> None:
    token, school = world.token, world.school
    (org,) = (await read(http, token, "/orgs"))["orgs"]
    assert org["sourcedId"] == str(school.id) and org["type"] == "school"
    sessions = {s["type"]: s for s in (await read(http, token, "/academicSessions"))["academicSessions"]}
    year = school_year(datetime.now(UTC).date(), 8, 31)
    assert set(sessions) == {"schoolYear", "term", "gradingPeriod"}
    for session in sessions.values():
        assert (session["startDate"], session["endDate"]) == (year.start.isoformat(), year.end.isoformat())
        assert session["schoolYear"] == str(year.end.year)
    assert sessions["term"]["parent"]["sourcedId"] == sessions["schoolYear"]["sourcedId"]
    assert sessions["gradingPeriod"]["parent"]["sourcedId"] == sessions["term"]["sourcedId"]
    assert [c["sourcedId"] for c in sessions["term"]["children"]] == [sessions["gradingPeriod"]["sourcedId"]]
    classes = {c["title"]: c for c in (await read(http, token, "/classes"))["classes"]}
    assert classes["7A"]["classType"] == "homeroom" and classes["Maths"]["classType"] == "scheduled"
    assert [t["sourcedId"] for t in classes["Maths"]["terms"]] == [sessions["term"]["sourcedId"]]
    courses = {c["sourcedId"]: c for c in (await read(http, token, "/courses"))["courses"]}
    assert courses[classes["Maths"]["course"]["sourcedId"]]["title"] == "Maths"
    users = {u["sourcedId"]: u for u in (await read(http, token, "/users"))["users"]}
    ann, teacher = users[world.pupils[0]], users[world.teacher]
    assert ann["roles"] == [
        {"roleType": "primary", "role": "student", "org": {**org_ref(ann), "sourcedId": str(school.id)}}
    ]
    assert ann["email"] == "" and teacher["email"] == "tess@example.org"
    assert ann["identifier"] == "C2K-1" and ann["userIds"] == [{"type": "MANUAL", "identifier": "C2K-1"}]
    assert (ann["givenName"], ann["familyName"], ann["enabledUser"]) == ("Ann", "Lee", True)
    assert teacher["roles"][0]["role"] == "teacher"
    enrollments = (await read(http, token, "/enrollments"))["enrollments"]
    maths = [e for e in enrollments if e["class"]["sourcedId"] == world.maths]
    assert {(e["user"]["sourcedId"], e["role"], e["primary"]) for e in maths} == {
        (world.pupils[0], "student", False),
        (world.teacher, "teacher", True),
    }
    # the ids never change
    again = await read(http, token, "/enrollments")
    assert again["enrollments"] == enrollments


def org_ref(user: dict[str, Any]) -> dict[str, Any]:
    ref: dict[str, Any] = user["roles"][0]["org"]
    return ref


async def test_the_nested_endpoints_list_what_they_name(http: httpx.AsyncClient, world: Roster) -> None:
    token = world.token
    assert ids(await read(http, token, f"/classes/{world.room}/students"), "users") == set(world.pupils[:2])
    assert ids(await read(http, token, f"/classes/{world.room}/teachers"), "users") == {world.teacher}
    assert ids(await read(http, token, f"/teachers/{world.teacher}/classes"), "classes") == {
        world.room,
        world.maths,
    }
    assert ids(await read(http, token, f"/students/{world.pupils[1]}/classes"), "classes") == {world.room}
    assert ids(await read(http, token, f"/students/{world.pupils[2]}/classes"), "classes") == set()
    school = str(world.school.id)
    assert ids(await read(http, token, f"/schools/{school}/students"), "users") == set(world.pupils)
    assert len((await read(http, token, f"/schools/{school}/enrollments"))["enrollments"]) == 5
    # a parent that is not there, or not of that kind, is a 404
    for path in (
        f"/classes/{uuid.uuid4()}/students",
        f"/teachers/{world.pupils[0]}/classes",
        f"/students/{world.teacher}/classes",
        f"/schools/{uuid.uuid4()}/classes",
        "/terms/not-an-id/gradingPeriods",
        f"/users/{uuid.uuid4()}",
        "/enrollments/nope",
    ):
        response = await get(http, token, path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == (
            "unknownobject"
        )


# The protocol.


async def test_paging_headers_and_large_limits(http: httpx.AsyncClient, world: Roster) -> None:
    response = await get(http, world.token, "/users", limit=2, offset=2)
    assert response.status_code == 200
    assert response.headers["x-total-count"] == "5"
    links = {
        part.split(";")[1].strip().removeprefix('rel="').removesuffix('"'): part.split(";")[0].strip("<> ")
        for part in response.headers["link"].split(", ")
    }
    assert set(links) == {"next", "prev", "first", "last"}
    assert "offset=4" in links["next"] and "offset=0" in links["prev"] and "offset=4" in links["last"]
    assert "limit=2" in links["next"]
    pages = [await read(http, world.token, "/users", limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [len(p["users"]) for p in pages] == [2, 2, 1]
    assert len(set().union(*(ids(p, "users") for p in pages))) == 5
    for limit in (5000, 10000, 50000):
        assert len((await read(http, world.token, "/users", limit=limit))["users"]) == 5


async def test_sort_order_and_fields(http: httpx.AsyncClient, world: Roster) -> None:
    names = [
        u["givenName"]
        for u in (await read(http, world.token, "/students", sort="givenName", orderBy="desc"))["users"]
    ]
    assert names == ["Cat", "Bob", "Ann"]
    projected = await read(http, world.token, "/students", fields="sourcedId,givenName")
    assert all(set(u) == {"sourcedId", "givenName"} for u in projected["users"])
    one = await read(http, world.token, f"/users/{world.teacher}", fields="email")
    assert one == {"user": {"email": "tess@example.org"}}


@pytest.mark.parametrize(
    "params, minor",
    [
        ({"fields": "sourcedId,shoeSize"}, "invalid_selection_field"),
        ({"sort": "shoeSize"}, "invalid_sort_field"),
        ({"orderBy": "sideways"}, "invalid_sort_field"),
        ({"filter": "shoeSize='9'"}, "invalid_filter_field"),
        ({"filter": "givenName='Ann"}, "invalid_filter_field"),
        ({"filter": "givenName=='Ann'"}, "invalid_filter_field"),
        ({"filter": "givenName='Ann' AND"}, "invalid_filter_field"),
        ({"filter": "dateLastModified>'yesterday'"}, "invalid_filter_field"),
        ({"filter": "dateLastModified>'9999-12-31T23:59:59-14:00'"}, "invalid_filter_field"),
        ({"filter": "dateLastModified>'0001-01-01T00:00:00+14:00'"}, "invalid_filter_field"),
        ({"filter": "enabledUser>'true'"}, "invalid_filter_field"),
        ({"limit": "0"}, "invalid_selection_field"),
        ({"limit": "ten"}, "invalid_selection_field"),
        ({"offset": "-1"}, "invalid_selection_field"),
    ],
)
async def test_bad_parameters_are_400_status_info(
    http: httpx.AsyncClient, world: Roster, params: dict[str, str], minor: str
) -> None:
    response = await get(http, world.token, "/users", **params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["imsx_codeMajor"] == "failure" and body["imsx_severity"] == "error"
    assert body["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == minor


@pytest.mark.parametrize(
    "filter, expected",
    [
        ("givenName='Ann'", {"Ann"}),
        ("givenName!='Ann'", {"Bob", "Cat"}),
        ("givenName~'a'", {"Ann", "Cat"}),
        ("givenName>'Ann' AND givenName<'Cat'", {"Bob"}),
        ("givenName='Ann' OR givenName='Cat'", {"Ann", "Cat"}),
        ("givenName='Ann' OR givenName='Bob' AND familyName='Nobody'", {"Ann"}),
        ("identifier='C2K-1'", {"Ann"}),
        ("userIds.identifier='C2K-1'", {"Ann"}),
        ("status='active' AND enabledUser='true'", {"Ann", "Bob", "Cat"}),
        ("dateLastModified>'2000-01-01'", {"Ann", "Bob", "Cat"}),
        ("dateLastModified<'2000-01-01T00:00:00Z'", set()),
        ("familyName='O''Neill'", set()),
    ],
)
async def test_filters(http: httpx.AsyncClient, world: Roster, filter: str, expected: set[str]) -> None:
    body = await read(http, world.token, "/students", filter=filter)
    assert {u["givenName"] for u in body["users"]} == expected


async def test_a_filter_with_or_never_reaches_past_the_school(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, world: Roster
) -> None:
    # given another school with users of its own
    other = await make_school(owner_engine, db)
    theirs = {str(await make_user(db, other, first_name="Ann", surname="Lee")) for _ in range(3)}
    # when filters that match everything, anywhere, are sent
    for path, key, filter in (
        ("/users", "users", "sourcedId!='x' OR givenName='Ann'"),
        ("/users", "users", "givenName='Ann' OR status='active' OR status!='active'"),
        ("/enrollments", "enrollments", "role='student' OR role!='student'"),
        ("/classes", "classes", "title~'' OR school.sourcedId!='x'"),
        ("/orgs", "orgs", f"sourcedId='{other.id}' OR sourcedId='{world.school.id}'"),
    ):
        body = await read(http, world.token, path, filter=filter, limit=10000)
        found = ids(body, key)
        # then only this school's objects come back
        assert not found & theirs and str(other.id) not in found, (path, filter)
        assert found, (path, filter)
    everyone = ids(await read(http, world.token, "/users", limit=10000), "users")
    assert (
        ids(await read(http, world.token, "/users", filter="sourcedId!='x' OR givenName='Ann'"), "users")
        == everyone
    )


def test_a_filter_is_compiled_to_bound_parameters_inside_the_school() -> None:
    from sqlalchemy.dialects import postgresql

    from db import rostering
    from oneroster import resources
    from oneroster.protocol import list_query
    from oneroster.query import list_statement

    context = rostering.Roster(
        school_id=uuid.uuid4(),
        year=school_year(datetime(2026, 12, 1).date(), 8, 31),
        sessions=rostering.session_ids(uuid.uuid4(), school_year(datetime(2026, 12, 1).date(), 8, 31)),
        school_name="S",
        school_slug="s",
        school_created_at=datetime.now(UTC),
        provider="MANUAL",
    )
    evil = "x' OR '1'='1"
    asked = list_query(
        {"filter": f"givenName='{evil.replace(chr(39), chr(39) * 2)}' OR status='active'"}, resources.USERS
    )
    compiled = list_statement(resources.USERS, resources.USERS.source(context), asked, "", None).compile(
        dialect=postgresql.dialect()  # type: ignore[no-untyped-call]
    )
    sql = str(compiled)
    assert evil not in sql and "1'='1" not in sql
    assert evil in compiled.params.values() and str(context.school_id) not in sql
    # the school's condition is in the innermost select, the filter's OR outside it, in brackets
    inner, outer = sql.split("FROM users")[1].split(") AS src", 1)
    (school_parameter,) = re.findall(r"users\.school_id = %\((school_id_\d+)\)s", inner)
    assert compiled.params[school_parameter] == context.school_id
    assert re.search(r"WHERE \(?coalesce\(.* OR .*", outer)


# A consumer's sync.


async def test_a_consumer_walks_the_chain_and_syncs_deltas(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database
) -> None:
    world = await roster(owner_engine, db, http)
    # the app signs in as a client
    token = await access_token(
        http, await make_client(db, world.school), f"{ROSTER_CORE_READONLY} {GRADEBOOK}"
    )
    # finds the teacher by email, their active classes, each class's students, the term's grading periods
    (teacher,) = (await read(http, token, "/teachers", filter="email='tess@example.org'"))["users"]
    classes = (
        await read(http, token, f"/teachers/{teacher['sourcedId']}/classes", filter="status='active'")
    )["classes"]
    assert {c["title"] for c in classes} == {"7A", "Maths"}
    students = {
        c["title"]: ids(await read(http, token, f"/classes/{c['sourcedId']}/students"), "users")
        for c in classes
    }
    assert students == {"7A": set(world.pupils[:2]), "Maths": {world.pupils[0]}}
    term = classes[0]["terms"][0]["sourcedId"]
    (period,) = (await read(http, token, f"/terms/{term}/gradingPeriods"))["academicSessions"]
    assert period["type"] == "gradingPeriod"
    # it remembers the latest dateLastModified it saw
    dates = []
    for path, key in (("/users", "users"), ("/classes", "classes"), ("/enrollments", "enrollments")):
        dates += [item["dateLastModified"] for item in (await read(http, token, path, limit=10000))[key]]
    seen = max(dates)
    delta = f"dateLastModified>'{seen}'"
    assert (await read(http, token, "/users", filter=delta))["users"] == []
    assert (await read(http, token, "/enrollments", filter=delta))["enrollments"] == []
    # then the school edits a name, moves a pupil, removes one from a class and deletes a pupil
    admin = world.school.admin_token
    edit = 'mutation ($id: ID!, $v: Int!) { updateUserField(userId: $id, field: FIRST_NAME, value: "Anne", expectedVersion: $v) { errors { code } } }'
    version = (
        await graphql(
            http, "query ($id: ID!) { user(id: $id) { version } }", {"id": world.pupils[0]}, token=admin
        )
    )["data"]["user"]["version"]
    assert (await graphql(http, edit, {"id": world.pupils[0], "v": version}, token=admin))["data"][
        "updateUserField"
    ]["errors"] == []
    async with school_scope(db, world.school.id) as session:
        actor = Actor(id=world.school.admin_id, label="admin")
        other_room = await create_class(
            session, school_id=world.school.id, actor=actor, name="7B", kind=ClassKind.REGISTRATION
        )
        await assign_to_class(
            session,
            school_id=world.school.id,
            actor=actor,
            class_id=other_room.id,
            user_ids=[uuid.UUID(world.pupils[1])],
        )
        await session.execute(
            text("delete from class_memberships where class_id = :c and user_id = :u"),
            {"c": world.maths, "u": world.pupils[0]},
        )
    delete = "mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code } } }"
    assert (await graphql(http, delete, {"ids": [world.pupils[2]]}, token=admin))["data"]["deleteUsers"][
        "errors"
    ] == []
    # the delta sees every change
    users = {u["sourcedId"]: u for u in (await read(http, token, "/users", filter=delta))["users"]}
    assert users[world.pupils[0]]["givenName"] == "Anne" and users[world.pupils[0]]["status"] == "active"
    assert users[world.pupils[2]]["status"] == "tobedeleted"
    classes_now = {c["title"] for c in (await read(http, token, "/classes", filter=delta))["classes"]}
    assert "7B" in classes_now
    changed = {
        (e["user"]["sourcedId"], e["class"]["sourcedId"]): e["status"]
        for e in (await read(http, token, "/enrollments", filter=delta))["enrollments"]
    }
    assert changed[(world.pupils[1], str(other_room.id))] == "active"  # moved in
    assert changed[(world.pupils[1], world.room)] == "tobedeleted"  # moved out
    assert changed[(world.pupils[0], world.maths)] == "tobedeleted"  # removed
    # and the unchanged are not sent again
    assert world.teacher not in users
    assert (world.teacher, world.room) not in changed
