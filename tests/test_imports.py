"""Bulk upload: export, preview, confirm with re-authentication, the atomic apply in the background with its
progress, the generated passwords taken once — on real files."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.applications import Starlette

from db import passwords
from db.audit import Actor
from db.embedded import EmbeddedServer
from db.engine import Database
from db.imports import jobs as imports
from db.maintenance import STALE_REASON, forget_expired_import_passwords
from db.models import Provider, UserType
from db.pagination import encode_cursor
from db.passwords import verify_password
from db.scope import bind_school, school_scope
from gql.ids import parse_id
from tests.conftest import ADMIN_PASSWORD, SchoolFixture, graphql, make_school, make_user, sign_in_as
from tests.test_cli import rollcall, serving
from web.background import BackgroundTasks
from web.settings import Settings

DATA = Path(__file__).parent / "data"
JOB = """
  id status fileName processed total failureReason warnings
  totals { create update unchanged error remove restore }
  newClasses { name kind } removeMissingPupils confirmedBy finishedAt
  generatedPasswordsAvailable generatedPasswordsAvailableUntil
  rows(first: 500) { totalCount edges { node {
    row username action userId changes { field from to } errors { column message }
    values { firstName surname type isAdmin registrationClass teachingClasses email }
  } } }
"""
UPLOAD = f"""
mutation ($file: Upload!, $remove: Boolean) {{
  bulkImport(file: $file, removeMissingPupils: $remove) {{ job {{ {JOB} }} errors {{ code field message }} }}
}}
"""
CONFIRM = f"""
mutation ($id: ID!, $password: String!) {{
  confirmImport(jobId: $id, currentPassword: $password) {{ job {{ {JOB} }} errors {{ code field message }} }}
}}
"""
TAKE = f"""
mutation ($id: ID!) {{
  takeGeneratedPasswords(jobId: $id) {{
    job {{ {JOB} }} generatedPasswords {{ username password }} errors {{ code field message }}
  }}
}}
"""
JOB_NOW = f"query ($id: ID!) {{ importJob(id: $id) {{ {JOB} }} }}"
PROGRESS = "query ($id: ID!) { importJob(id: $id) { status processed total } }"
ENDED = ("SUCCEEDED", "FAILED")
LOGIN = (
    "mutation ($s: String!, $u: String!, $p: String!) { login(school: $s, username: $u, password: $p) "
    "{ errors { code } } }"
)


async def upload(
    http: httpx.AsyncClient,
    token: str,
    data: bytes,
    name: str = "roster.csv",
    remove: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A GraphQL multipart request, as the launchpad's file picker sends it."""
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None, "remove": remove}})
    return await http.post(
        "/graphql",
        data={"operations": operations, "map": json.dumps({"0": ["variables.file"]})},
        files={"0": (name, data, "text/csv")},
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
    )


async def preview(
    http: httpx.AsyncClient, school: SchoolFixture, data: bytes, **kwargs: Any
) -> dict[str, Any]:
    response = await upload(http, school.admin_token, data, **kwargs)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()["data"]["bulkImport"]
    return _flat(payload)


def _flat(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with its job's rows (their first page: every row of the files whose rows are looked at)
    as a plain list."""
    if payload.get("job"):
        payload["job"]["rows"] = [edge["node"] for edge in payload["job"]["rows"]["edges"]]
    return payload


async def start(
    http: httpx.AsyncClient, school: SchoolFixture, job_id: str, password: str = ADMIN_PASSWORD
) -> dict[str, Any]:
    """confirmImport as it answers: at once, the job RUNNING."""
    body = await graphql(http, CONFIRM, {"id": job_id, "password": password}, token=school.admin_token)
    return _flat(body["data"]["confirmImport"])


async def finished(
    http: httpx.AsyncClient, school: SchoolFixture, job_id: str, *, token: str | None = None
) -> dict[str, Any]:
    """The job once it has ended, followed as a client would (polling importJob)."""
    for _ in range(6000):
        body = await graphql(http, JOB_NOW, {"id": job_id}, token=token or school.admin_token)
        job: dict[str, Any] = _flat({"job": body["data"]["importJob"]})["job"]
        if job["status"] in ENDED:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"import {job_id} did not end")


async def take(
    http: httpx.AsyncClient, school: SchoolFixture, job_id: str, *, token: str | None = None
) -> dict[str, Any]:
    body = await graphql(http, TAKE, {"id": job_id}, token=token or school.admin_token)
    return _flat(body["data"]["takeGeneratedPasswords"])


async def confirm(
    http: httpx.AsyncClient, school: SchoolFixture, job_id: str, password: str = ADMIN_PASSWORD
) -> dict[str, Any]:
    """Confirm, follow the job to its end, and take the passwords it generated (if it did): `job` as it ended,
    `errors` the confirmation's, `generatedPasswords` those taken."""
    started = await start(http, school, job_id, password)
    if started["errors"]:
        return {**started, "generatedPasswords": []}
    assert started["job"]["status"] == "RUNNING", started
    job = await finished(http, school, job_id)
    generated: list[dict[str, str]] = []
    if job["generatedPasswordsAvailable"]:
        taken = await take(http, school, job_id)
        assert taken["errors"] == [], taken
        generated = taken["generatedPasswords"]
    return {"job": job, "errors": [], "generatedPasswords": generated}


async def export(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/users.csv", headers={"Authorization": f"Bearer {token}"})


async def roster(db: Database, school: SchoolFixture) -> list[tuple[Any, ...]]:
    """Everything an import could change, to compare before and after."""
    async with school_scope(db, school.id) as session:
        users = (
            await session.execute(
                text(
                    "select username, first_name, surname, type, is_admin, password_hash, deleted_at is null, version "
                    "from users order by username"
                )
            )
        ).all()
        classes = (
            await session.execute(
                text(
                    "select c.name, c.kind, u.username from classes c left join class_memberships m "
                    "on m.class_id = c.id left join users u on u.id = m.user_id order by 1, 3"
                )
            )
        ).all()
    return [tuple(row) for row in [*users, *classes]]


ROSTER = (
    b"username,first_name,surname,type,registration_class,teaching_classes,is_admin,password\r\n"
    b"jones.m,Megan,Jones,TEACHER,,Maths A;Choir,false,Teach-me-2026\r\n"
    b"amy.b,Amy,Brown,PUPIL,P3,Maths A,false,cat1\r\n"
    b"ben.c,Ben,Clarke,PUPIL,P3,,false,\r\n"
    b'cara.d,=SUM(A1),"Doyle, Jr",PUPIL,P4,Choir,false,\r\n'
)


@pytest.fixture
async def loaded(http: httpx.AsyncClient, db: Database, school: SchoolFixture) -> dict[str, Any]:
    """A school whose roster came from a file: a teacher, three pupils, four classes."""
    job = (await preview(http, school, ROSTER))["job"]
    applied = await confirm(http, school, job["id"])
    assert applied["errors"] == [], applied
    return applied


async def test_the_export_is_an_attachment_with_bom_and_escaped_formulas(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    await make_user(db, school, username="mallory", first_name='=HYPERLINK("http://x")', surname="@SUM(1)")
    response = await export(http, school.admin_token)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == f'attachment; filename="{school.slug}-users.csv"'
    assert response.content.startswith(
        b"\xef\xbb\xbfusername,first_name,surname,type,registration_class,"
        b"teaching_classes,is_admin,email,password\r\n"
    )
    lines = response.content.decode("utf-8-sig").split("\r\n")
    assert "amy.b,Amy,Brown,PUPIL,P3,Maths A,false,," in lines
    assert "jones.m,Megan,Jones,TEACHER,,Choir;Maths A,false,," in lines
    assert 'mallory,"\'=HYPERLINK(""http://x"")",\'@SUM(1),PUPIL,,,false,,' in lines
    assert 'cara.d,\'=SUM(A1),"Doyle, Jr",PUPIL,P4,Choir,false,,' in lines


async def test_the_export_reimports_as_no_changes(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    await make_user(db, school, username="quoted", first_name="-Dash", surname='O\'Brien, "Jr"')
    exported = (await export(http, school.admin_token)).content
    job = (await preview(http, school, exported))["job"]
    assert job["totals"] == {"create": 0, "update": 0, "unchanged": 6, "error": 0, "remove": 0, "restore": 0}
    assert job["newClasses"] == []


async def test_only_admins_download_the_roster(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    teacher = await sign_in_as(db, school, await make_user(db, school, type=UserType.TEACHER))
    assert (await export(http, teacher)).status_code == 403
    assert (await http.get("/users.csv")).status_code == 401
    assert (await http.get("/users.csv", params={"token": school.admin_token})).status_code == 400
    http.cookies.set("rollcall_session", school.admin_token)
    assert (await http.get("/users.csv")).status_code == 200


async def test_the_preview_shows_every_action_and_changes_nothing(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    before = await roster(db, school)
    edited = (
        "Username;First Name;Surname;Type;Registration_Class;Teaching_Classes;Is_Admin;Password\r\n"
        "jones.m;Megan;Jones-Hughes;TEACHER;;Maths A;false;\r\n"  # surname and a teaching class changed
        "amy.b;Amy;Brown;PUPIL;P3;Maths A;false;\r\n"  # unchanged
        "new.kid;Nia;Khan;PUPIL;P5;Art Club;false;\r\n"  # new, with two new classes
        "bad kid;X;Y;PARENT;;;false;\r\n"  # errors
    ).encode("cp1252")
    job = (await preview(http, school, edited, remove=True))["job"]
    assert job["status"] == "PREVIEW"
    assert job["totals"] == {"create": 1, "update": 1, "unchanged": 1, "error": 1, "remove": 2, "restore": 0}
    rows = {row["username"]: row for row in job["rows"]}
    # named as the User type names the fields, spelt as the roster and the file spell them
    assert rows["jones.m"]["changes"] == [
        {"field": "surname", "from": "Jones", "to": "Jones-Hughes"},
        {"field": "teachingClasses", "from": "Choir;Maths A", "to": "Maths A"},
    ]
    assert rows["new.kid"]["action"] == "CREATE" and rows["new.kid"]["row"] == 4
    assert rows["new.kid"]["values"] == {
        "firstName": "Nia",
        "surname": "Khan",
        "type": "PUPIL",
        "isAdmin": False,
        "registrationClass": "P5",
        "teachingClasses": ["Art Club"],
        "email": None,
    }
    assert rows["bad kid"]["values"] is None
    assert {e["column"] for e in rows["bad kid"]["errors"]} == {"username", "type"}
    assert {r["username"] for r in job["rows"] if r["action"] == "REMOVE"} == {"ben.c", "cara.d"}
    assert sorted(job["newClasses"], key=lambda c: c["name"]) == [
        {"name": "Art Club", "kind": "TEACHING"},
        {"name": "P5", "kind": "REGISTRATION"},
    ]
    assert await roster(db, school) == before
    refused = await confirm(http, school, job["id"])
    assert [e["code"] for e in refused["errors"]] == ["IMPORT_NOT_CONFIRMABLE"]


async def test_confirm_applies_everything_once(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    job = (await preview(http, school, ROSTER))["job"]
    assert job["totals"]["create"] == 4
    assert [e["code"] for e in (await confirm(http, school, job["id"], "wrong"))["errors"]] == [
        "REAUTH_FAILED"
    ]
    applied = await confirm(http, school, job["id"])
    assert applied["errors"] == []
    assert applied["job"]["status"] == "SUCCEEDED"
    assert applied["job"]["processed"] == applied["job"]["total"] == 4
    generated = {g["username"]: g["password"] for g in applied["generatedPasswords"]}
    assert set(generated) == {"ben.c", "cara.d"}
    assert len(set(generated.values())) == 2
    for username, password in [
        ("ben.c", generated["ben.c"]),
        ("amy.b", "cat1"),
        ("jones.m", "Teach-me-2026"),
    ]:
        login = await graphql(http, LOGIN, {"s": school.slug, "u": username, "p": password})
        assert login["data"]["login"]["errors"] == [], username
    users = await graphql(
        http,
        "{ users(filter: {classId: null}, first: 50) { edges { node { username "
        "registrationClass { name } teachingClasses { name } } } } }",
        token=school.admin_token,
    )
    amy = next(e["node"] for e in users["data"]["users"]["edges"] if e["node"]["username"] == "amy.b")
    assert amy == {
        "username": "amy.b",
        "registrationClass": {"name": "P3"},
        "teachingClasses": [{"name": "Maths A"}],
    }
    again = await confirm(http, school, job["id"])
    assert [e["code"] for e in again["errors"]] == ["IMPORT_NOT_CONFIRMABLE"]
    async with school_scope(db, school.id) as session:
        stored = (await session.execute(text("select sealed_passwords from import_jobs"))).scalar_one()
        actions = (
            (await session.execute(text("select action from audit_events order by created_at")))
            .scalars()
            .all()
        )
    assert stored is None
    assert "user.created" in actions and "import.previewed" in actions


async def test_an_update_moves_a_pupil_and_keeps_an_untouched_password(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    moved = ROSTER.replace(
        b"amy.b,Amy,Brown,PUPIL,P3,Maths A,false,cat1", b"amy.b,Amy,Brown,PUPIL,P4,,false,"
    )
    job = (await preview(http, school, moved))["job"]
    # jones.m's row still carries a password, so it counts as an update too
    assert job["totals"] == {"create": 0, "update": 2, "unchanged": 2, "error": 0, "remove": 0, "restore": 0}
    assert (await confirm(http, school, job["id"]))["errors"] == []
    body = await graphql(
        http,
        '{ users(filter: {search: "amy"}) { edges { node { registrationClass { name } '
        "teachingClasses { name } version } } } }",
        token=school.admin_token,
    )
    assert body["data"]["users"]["edges"][0]["node"] == {
        "registrationClass": {"name": "P4"},
        "teachingClasses": [],
        "version": 2,
    }
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "amy.b", "p": "cat1"})
    assert login["data"]["login"]["errors"] == []


async def test_remove_missing_pupils_deletes_them_on_apply(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    only_amy = b"username,type\r\namy.b,PUPIL\r\njones.m,TEACHER\r\n"
    kept = (await preview(http, school, only_amy))["job"]
    assert kept["removeMissingPupils"] is False and kept["totals"]["remove"] == 0
    job = (await preview(http, school, only_amy, remove=True))["job"]
    assert job["removeMissingPupils"] is True
    assert job["totals"] == {"create": 0, "update": 0, "unchanged": 2, "error": 0, "remove": 2, "restore": 0}
    assert (await confirm(http, school, job["id"]))["errors"] == []
    body = await graphql(
        http, "{ users(filter: {status: DELETED}) { edges { node { username } } } }", token=school.admin_token
    )
    assert sorted(e["node"]["username"] for e in body["data"]["users"]["edges"]) == ["ben.c", "cara.d"]


async def test_a_failure_mid_apply_leaves_the_roster_untouched(
    http: httpx.AsyncClient,
    db: Database,
    owner_engine: AsyncEngine,
    school: SchoolFixture,
    loaded: dict[str, Any],
) -> None:
    before = await roster(db, school)
    edited = (
        ROSTER.replace(b"Megan,Jones", b"Megan,Changed") + b"zz.refused,Last,Row,PUPIL,P9,New Club,false,\r\n"
    )
    job = (await preview(http, school, edited))["job"]
    assert job["totals"]["create"] == 1 and job["totals"]["update"] == 2
    # The database refuses the last new user only when it is written: after the classes, the update and the
    # other rows.
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "alter table users add constraint test_refuses_zz check (username <> 'zz.refused') not valid"
            )
        )
    try:
        failed = await confirm(http, school, job["id"])
    finally:
        async with owner_engine.begin() as connection:
            await connection.execute(text("alter table users drop constraint test_refuses_zz"))
    # the confirmation was accepted; the apply, in the background, failed with a reason and wrote nothing
    assert failed["errors"] == [] and failed["job"]["status"] == "FAILED"
    assert failed["job"]["failureReason"] == imports.FAILED_REASON
    assert failed["job"]["finishedAt"] is not None and failed["job"]["generatedPasswordsAvailable"] is False
    assert await roster(db, school) == before
    taken = await take(http, school, job["id"])
    assert [e["code"] for e in taken["errors"]] == ["NO_GENERATED_PASSWORDS"]


async def test_the_roster_changing_after_the_preview_fails_the_job_cleanly(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    demote = b"username,is_admin\r\nadmin,false\r\n"
    second_admin = await make_user(db, school, username="deputy", type=UserType.TEACHER, is_admin=True)
    job = (await preview(http, school, demote))["job"]
    assert job["totals"]["update"] == 1
    async with school_scope(db, school.id) as session:
        await session.execute(text("update users set is_admin = false where id = :id"), {"id": second_admin})
    before = await roster(db, school)
    failed = await confirm(http, school, job["id"])
    assert failed["errors"] == [] and failed["job"]["status"] == "FAILED"
    assert failed["job"]["failureReason"].startswith("The roster changed since the preview")
    assert await roster(db, school) == before


async def test_progress_counts_rows_and_is_visible_from_a_second_connection(
    http: httpx.AsyncClient,
    server_url: str,
    school: SchoolFixture,
    loaded: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a file of the four users there are (no password to hash: ready at once) and 150 new pupils
    new = 150
    big = ROSTER.decode().replace(",Teach-me-2026", ",").replace(",cat1", ",") + "".join(
        f"pupil{i:04},First{i},Last{i},PUPIL,P{i % 7},,false,\r\n" for i in range(new)
    )
    job = (await preview(http, school, big.encode()))["job"]
    assert job["totals"]["unchanged"] == 4 and job["totals"]["create"] == new
    seen: list[tuple[str, int]] = []
    # Half the passwords wait until the watcher has seen the import part way, on a machine fast or slow.
    seen_part_way, started = asyncio.Event(), 0
    real_hash = passwords.hash_password_in_bulk

    async def hash_half_then_wait(password: str) -> str:
        nonlocal started
        started += 1
        if started > new // 2:
            await asyncio.wait_for(seen_part_way.wait(), timeout=60)
        return await real_hash(password)

    monkeypatch.setattr(passwords, "hash_password_in_bulk", hash_half_then_wait)

    # when it is confirmed, it answers at once, RUNNING
    confirmed = await start(http, school, job["id"])
    assert confirmed["errors"] == [] and confirmed["job"]["status"] == "RUNNING"
    assert confirmed["job"]["finishedAt"] is None and confirmed["job"]["confirmedBy"] is not None

    async with httpx.AsyncClient(base_url=server_url, timeout=120) as second:
        while True:
            body = await graphql(second, PROGRESS, {"id": job["id"]}, token=school.admin_token)
            state = body["data"]["importJob"]
            seen.append((state["status"], state["processed"]))
            if state["status"] == "RUNNING" and state["processed"] == 4 + new // 2:
                seen_part_way.set()
            if state["status"] in ENDED:
                break
            await asyncio.sleep(0.05)

    # then the watcher saw rows done: the four ready ones and every hashed one (not steps of 64 hashes)
    running = [processed for status, processed in seen if status == "RUNNING"]
    assert 4 + new // 2 in running, seen
    assert running == sorted(running)
    assert seen[-1] == ("SUCCEEDED", job["total"])
    taken = await take(http, school, job["id"])
    assert taken["errors"] == [] and len(taken["generatedPasswords"]) == new


async def test_progress_is_written_at_most_four_times_a_second(
    db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    # given a running job and its writer, told of a row done every few milliseconds for a second
    async with school_scope(db, school.id) as session:
        job_id = (await session.execute(text("select id from import_jobs"))).scalar_one()
        await session.execute(text("update import_jobs set status = 'RUNNING', confirmed_by = null"))
    loop = asyncio.get_running_loop()
    async with imports.ProgressWriter(db, school.id, job_id) as writer:
        began = loop.time()
        while loop.time() - began < 1.0:
            writer.done += 1
            await asyncio.sleep(0.005)
        await writer.flush()
        elapsed = loop.time() - began
    # then it wrote a few times (throttled), the last write the last count
    assert 2 <= writer.writes <= elapsed / imports.PROGRESS_SECONDS + 2, writer.writes
    async with school_scope(db, school.id) as session:
        processed = (await session.execute(text("select processed from import_jobs"))).scalar_one()
    assert processed == writer.done > 100


async def test_sign_in_elsewhere_does_not_wait_behind_a_large_import(
    http: httpx.AsyncClient, server_url: str, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    # given an import generating passwords for enough pupils that hashing them takes seconds
    rows = 384
    big = "username,first_name,surname,type,registration_class\r\n" + "".join(
        f"pupil{i:04},First{i},Last{i},PUPIL,P{i % 7}\r\n" for i in range(rows)
    )
    job = (await preview(http, school, big.encode()))["job"]
    other = await make_school(owner_engine, db)

    async with httpx.AsyncClient(base_url=server_url, timeout=300) as patient:
        importing = asyncio.create_task(confirm(patient, school, job["id"]))
        # when, once the import is hashing, an admin of another school signs in
        while True:
            state = (await graphql(http, PROGRESS, {"id": job["id"]}, token=school.admin_token))["data"]
            assert not importing.done()
            if state["importJob"]["processed"] >= 64:
                break
            await asyncio.sleep(0.02)
        login = await graphql(
            http,
            LOGIN,
            {"s": other.slug, "u": "admin", "p": ADMIN_PASSWORD},
            headers={"X-Forwarded-For": "2001:db8::1:5e"},
        )
        state = (await graphql(http, PROGRESS, {"id": job["id"]}, token=school.admin_token))["data"]
        applied = await importing

    # then the sign-in was answered while the import had most of its hashing still to do
    assert login["data"]["login"]["errors"] == []
    assert state["importJob"]["status"] == "RUNNING"
    assert state["importJob"]["processed"] < rows // 2, state
    assert applied["errors"] == [] and len(applied["generatedPasswords"]) == rows


async def test_managed_schools_refuse_imports(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database
) -> None:
    managed = await make_school(owner_engine, db, provider=Provider.GLOW)
    payload = await preview(http, managed, ROSTER)
    assert [e["code"] for e in payload["errors"]] == ["MANAGED_BY_PROVIDER"]


@pytest.mark.parametrize(
    "name,message",
    [
        ("empty.csv", "empty"),
        ("binary.xlsx.csv", "Excel"),
        ("nul_bytes.csv", "NUL"),
        ("broken_no_username_column.csv", "username"),
        ("mixed_utf8_windows1252.csv", "Row 2 is UTF-8 but row 4 is Windows-1252"),
    ],
)
async def test_broken_files_are_refused_whole(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, name: str, message: str
) -> None:
    payload = await preview(http, school, (DATA / name).read_bytes(), name=name)
    assert [e["code"] for e in payload["errors"]] == ["INVALID_FILE"]
    assert message.lower() in payload["errors"][0]["message"].lower()
    async with school_scope(db, school.id) as session:
        assert (await session.execute(text("select count(*) from import_jobs"))).scalar_one() == 0


async def test_a_file_of_row_errors_is_stored_as_a_preview_only(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    before = await roster(db, school)
    job = (await preview(http, school, (DATA / "broken_duplicates_and_bad_values.csv").read_bytes()))["job"]
    assert job["totals"]["error"] > 0
    assert await roster(db, school) == before


@pytest.mark.parametrize(
    "name,expected",
    [
        ("export_edited_in_excel.csv", None),
        ("semicolon_windows1252.csv", None),
        ("tab_separated.csv", None),
        ("legacy_columns.csv", None),
        ("quoted_newlines_blank_lines.csv", None),
        ("headers_any_case_order.csv", None),
    ],
)
async def test_real_spreadsheet_files_apply(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, name: str, expected: None
) -> None:
    job = (await preview(http, school, (DATA / name).read_bytes(), name=name))["job"]
    assert job["totals"]["error"] == 0, job["rows"]
    assert job["totals"]["create"] > 0
    applied = await confirm(http, school, job["id"])
    assert applied["errors"] == [] and applied["job"]["status"] == "SUCCEEDED"
    async with school_scope(db, school.id) as session:
        count = (
            await session.execute(text("select count(*) from users where deleted_at is null"))
        ).scalar_one()
    assert count == 1 + job["totals"]["create"] + job["totals"]["update"] + job["totals"]["unchanged"] - sum(
        1 for r in job["rows"] if r["username"].lower() == "admin"
    )


async def test_the_legacy_format_maps_administrator_and_missing_type(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    job = (await preview(http, school, (DATA / "legacy_columns.csv").read_bytes()))["job"]
    assert (await confirm(http, school, job["id"]))["errors"] == []
    async with school_scope(db, school.id) as session:
        rows = dict(
            (await session.execute(text("select username, type || ':' || is_admin from users"))).all()
        )
    assert (
        rows["head"] == "TEACHER:true"
        and rows["jkelly"] == "PUPIL:false"
        and rows["areid"] == "TEACHER:false"
    )


async def test_uploads_need_a_bearer_token_or_the_csrf_header(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None}})
    form = {"operations": operations, "map": json.dumps({"0": ["variables.file"]})}
    response = await http.post("/graphql", data=form, files={"0": ("r.csv", ROSTER, "text/csv")})
    assert response.status_code == 403
    http.cookies.set("rollcall_session", school.admin_token)
    response = await http.post(
        "/graphql", data=form, files={"0": ("r.csv", ROSTER, "text/csv")}, headers={"X-Rollcall-CSRF": "1"}
    )
    assert response.status_code == 200 and response.json()["data"]["bulkImport"]["errors"] == []


async def test_an_oversized_body_is_refused(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    response = await upload(http, school.admin_token, b"username\r\n" + b"x" * (6 * 1024 * 1024))
    assert response.status_code == 413


# What an import keeps: typed passwords sealed, and only while the preview can be confirmed

TYPED = ("cat1", "Teach-me-2026")
RAW_JOB = "select to_jsonb(j)::text from import_jobs j where id = :id"
SEALED = "select id::text, sealed_passwords is not null from import_jobs"


async def raw_job(owner_engine: AsyncEngine, school: SchoolFixture, job_id: str) -> str:
    """The whole import_jobs row as the tables' owner reads it (a database dump sees the same)."""
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, school.id)
        row: str = (await session.execute(text(RAW_JOB), {"id": job_id})).scalar_one()
    return row


def plainly_in(row: str, password: str) -> bool:
    return password in row or password.encode().hex() in row


async def sealed_jobs(db: Database, school: SchoolFixture) -> dict[str, bool]:
    async with school_scope(db, school.id) as session:
        return {job_id: sealed for job_id, sealed in await session.execute(text(SEALED))}


async def expire(db: Database, school: SchoolFixture, job_id: str) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(
            text("update import_jobs set expires_at = now() - interval '1 minute' where id = :id"),
            {"id": job_id},
        )


async def test_typed_passwords_are_not_in_the_database_in_plain(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    job = (await preview(http, school, ROSTER))["job"]
    row = await raw_job(owner_engine, school, job["id"])
    assert not [password for password in TYPED if plainly_in(row, password)]
    assert await sealed_jobs(db, school) == {job["id"]: True}
    # and the sealed passwords still sign in once the import is confirmed
    assert (await confirm(http, school, job["id"]))["errors"] == []
    for username, password in (("amy.b", "cat1"), ("jones.m", "Teach-me-2026")):
        login = await graphql(http, LOGIN, {"s": school.slug, "u": username, "p": password})
        assert login["data"]["login"]["errors"] == [], username
    assert await sealed_jobs(db, school) == {job["id"]: False}


async def test_a_preview_with_errors_keeps_no_passwords(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    job = (await preview(http, school, ROSTER + b"bad kid,X,Y,PARENT,,,false,typed-in-error\r\n"))["job"]
    assert job["totals"]["error"] == 1
    row = await raw_job(owner_engine, school, job["id"])
    assert not [password for password in (*TYPED, "typed-in-error") if plainly_in(row, password)]
    assert await sealed_jobs(db, school) == {job["id"]: False}


async def test_sealed_passwords_open_only_on_their_own_job(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    first = (await preview(http, school, ROSTER))["job"]
    second = (await preview(http, school, ROSTER.replace(b"cat1", b"dog2")))["job"]
    before = await roster(db, school)
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "update import_jobs set sealed_passwords = (select sealed_passwords from "
                "import_jobs where id = :first) where id = :second"
            ),
            {"first": first["id"], "second": second["id"]},
        )
    refused = await confirm(http, school, second["id"])
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [("IMPORT_NOT_CONFIRMABLE", "jobId")]
    assert "upload the file again" in refused["errors"][0]["message"]
    assert await roster(db, school) == before


def owner_env(migrated: EmbeddedServer, tmp_path: Path) -> dict[str, str]:
    urls = migrated.urls()
    return {
        **os.environ,
        "DATABASE_URL": urls.owner,
        "APP_DATABASE_URL": urls.app,
        "ROLLCALL_DATA_DIR": str(tmp_path),
    }


async def test_expired_previews_lose_their_typed_passwords_on_purge(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, migrated: EmbeddedServer, tmp_path: Path
) -> None:
    expired, waiting = (
        (await preview(http, school, ROSTER))["job"],
        (await preview(http, school, ROSTER))["job"],
    )
    await expire(db, school, expired["id"])
    purged = await asyncio.to_thread(rollcall, owner_env(migrated, tmp_path), "purge")
    assert purged.returncode == 0, purged.stderr
    assert (
        f"{school.slug}: 0 users purged, typed passwords removed from 1 expired import previews"
        in purged.stdout
    )
    assert await sealed_jobs(db, school) == {expired["id"]: False, waiting["id"]: True}


async def test_expired_previews_lose_their_typed_passwords_at_start_up(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, migrated: EmbeddedServer, tmp_path: Path
) -> None:
    expired, waiting = (
        (await preview(http, school, ROSTER))["job"],
        (await preview(http, school, ROSTER))["job"],
    )
    await expire(db, school, expired["id"])
    # Started in a thread: this test's event loop also runs the in-process server.
    server = serving(owner_env(migrated, tmp_path))
    await asyncio.to_thread(server.__enter__)
    try:
        assert await sealed_jobs(db, school) == {expired["id"]: False, waiting["id"]: True}
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


async def test_a_class_named_by_a_look_alike_is_the_existing_class(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    # Cyrillic Р in the registration class, full-width letters and another case in the teaching class
    data = (
        "username,first_name,surname,type,registration_class,teaching_classes\r\n"
        "nia.k,Nia,Khan,PUPIL,\u04203,\uff2d\uff41\uff54\uff48\uff53 a\r\n"
    ).encode()
    job = (await preview(http, school, data))["job"]
    assert job["newClasses"] == [] and job["totals"]["create"] == 1
    assert (await confirm(http, school, job["id"]))["errors"] == []
    classes = await graphql(
        http,
        '{ users(filter: {search: "nia.k"}) { edges { node { registrationClass '
        "{ name } teachingClasses { name } } } } }",
        token=school.admin_token,
    )
    assert classes["data"]["users"]["edges"][0]["node"] == {
        "registrationClass": {"name": "P3"},
        "teachingClasses": [{"name": "Maths A"}],
    }


EMAILS = "query { users(first: 100) { edges { node { username email } } } }"


async def test_staff_emails_come_in_with_the_file_and_go_out_with_the_export(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a file that gives a teacher an email, a pupil one, and two teachers the same one
    file = (
        b"username,type,email\r\n"
        b"hill,Teacher,Hill@School.example\r\n"
        b"amy,Pupil,amy@home.example\r\n"
        b"park,Teacher,park@school.example\r\n"
        b"moss,Teacher,PARK@school.example\r\n"
    )

    # when
    job = (await preview(http, school, file))["job"]

    # then the pupil's and the shared ones are errors of their rows
    shown = [(row["username"], row["action"], [e["column"] for e in row["errors"]]) for row in job["rows"]]
    assert shown == [
        ("hill", "CREATE", []),
        ("amy", "ERROR", ["email"]),
        ("park", "ERROR", ["email"]),
        ("moss", "ERROR", ["email"]),
    ]

    # when the fixed file is applied
    fixed = b"username,type,email\r\nhill,Teacher,Hill@School.example\r\namy,Pupil,\r\n"
    applied = await confirm(http, school, (await preview(http, school, fixed))["job"]["id"])
    assert applied["errors"] == []

    # then the teacher has it, in GraphQL and in the export
    users = (await graphql(http, EMAILS, token=school.admin_token))["data"]["users"]["edges"]
    assert {edge["node"]["username"]: edge["node"]["email"] for edge in users} == {
        "admin": None,
        "hill": "Hill@School.example",
        "amy": None,
    }
    exported = (await export(http, school.admin_token)).text
    assert "hill,,,TEACHER,,,false,Hill@School.example," in exported
    # and a changed address is an UPDATE showing it
    again = await preview(http, school, b"username,email\r\nhill,m.hill@school.example\r\n")
    (row,) = again["job"]["rows"]
    assert (row["action"], row["changes"]) == (
        "UPDATE",
        [{"field": "email", "from": "Hill@School.example", "to": "m.hill@school.example"}],
    )


async def test_a_pupil_the_file_removes_loses_their_login_cards(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    amy = await make_user(db, school, username="amy")
    await make_user(db, school, username="ben")
    job = (await preview(http, school, b"username\r\nben\r\n", remove=True))["job"]
    assert (await confirm(http, school, job["id"]))["errors"] == []
    async with school_scope(db, school.id) as session:
        version = (
            await session.execute(text("select login_code_version from users where id = :id"), {"id": amy})
        ).scalar_one()
    assert version == 2


async def test_hashes_made_before_the_apply_are_used_only_where_the_row_still_wants_them() -> None:
    """The passwords are hashed before the apply's transaction, against a draft plan; under the roster's lock
    the plan is made again, and the roster may have changed in between."""
    # given a draft that hashed Amy's typed password and generated one for Ben, a new pupil then
    draft = [imports._Password(2, "amy", "amy-typed-pass"), imports._Password(3, "ben", None)]
    done = await imports._hash_all(draft, imports._not_counted)
    assert set(done.hashes) == {2, 3} and [g.username for g in done.generated.values()] == ["ben"]

    # when, under the lock, Ben exists already (no password wanted) and Cat has become new
    locked = [imports._Password(2, "amy", "amy-typed-pass"), imports._Password(4, "cat", None)]
    applied = await imports._hash_all(locked, imports._not_counted, done)

    # then Amy's hash is the draft's, Ben's generated password is dropped, and Cat gets one of her own
    assert applied.hashes[2] == done.hashes[2]
    assert set(applied.hashes) == {2, 4} and [g.username for g in applied.generated.values()] == ["cat"]
    assert verify_password(applied.hashes[4], applied.generated[4].password)
    assert verify_password(applied.hashes[2], "amy-typed-pass")

    # and a row that wants another kind of password than the draft hashed is hashed afresh
    retyped = await imports._hash_all(
        [imports._Password(3, "ben", "ben-typed-pass")], imports._not_counted, done
    )
    assert verify_password(retyped.hashes[3], "ben-typed-pass") and retyped.generated == {}


USERS = "query ($s: String!) { users(filter: {search: $s, status: ALL}) { edges { node { id username } } } }"
DELETE = "mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code } } }"


async def test_a_deleted_users_username_restores_them_rather_than_making_a_second(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any]
) -> None:
    # given Amy, deleted
    body = await graphql(http, USERS, {"s": "amy.b"}, token=school.admin_token)
    (amy,) = [edge["node"]["id"] for edge in body["data"]["users"]["edges"]]
    deleted = await graphql(http, DELETE, {"ids": [amy]}, token=school.admin_token)
    assert deleted["data"]["deleteUsers"]["errors"] == []

    # when a file names her again, with a new surname and class
    file = b"username,first_name,surname,type,registration_class\r\nAMY.B,Amy,Brown-Smith,PUPIL,P4\r\n"
    job = (await preview(http, school, file))["job"]

    # then the preview restores her, showing what changes
    assert job["totals"] == {"create": 0, "update": 0, "unchanged": 0, "error": 0, "remove": 0, "restore": 1}
    (row,) = job["rows"]
    assert (row["action"], row["userId"]) == ("RESTORE", amy)
    assert row["changes"] == [
        {"field": "username", "from": "amy.b", "to": "AMY.B"},
        {"field": "surname", "from": "Brown", "to": "Brown-Smith"},
        {"field": "registrationClass", "from": "P3", "to": "P4"},
    ]
    assert row["values"]["surname"] == "Brown-Smith" and row["values"]["teachingClasses"] == ["Maths A"]

    # and applying it brings the same user back, changed, with her password and teaching class
    assert (await confirm(http, school, job["id"]))["job"]["status"] == "SUCCEEDED"
    async with school_scope(db, school.id) as session:
        users = (
            await session.execute(
                text(
                    "select id::text, surname, deleted_at is null from users where lower(username) = 'amy.b'"
                )
            )
        ).all()
        actions = (await session.execute(text("select action from audit_events"))).scalars().all()
    assert [tuple(user) for user in users] == [(str(parse_id(amy, field="id")), "Brown-Smith", True)]
    assert "user.restored" in actions
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "AMY.B", "p": "cat1"})
    assert login["data"]["login"]["errors"] == []
    classes = await graphql(
        http,
        '{ users(filter: {search: "amy"}) { edges { node { registrationClass { name } teachingClasses { name } } } } }',
        token=school.admin_token,
    )
    assert classes["data"]["users"]["edges"][0]["node"] == {
        "registrationClass": {"name": "P4"},
        "teachingClasses": [{"name": "Maths A"}],
    }


ROWS = """
query ($id: ID!, $first: Int, $after: String, $last: Int, $before: String, $action: ImportAction) {
  importJob(id: $id) {
    rows(first: $first, after: $after, last: $last, before: $before, action: $action) {
      totalCount edges { cursor node { row username } }
      pageInfo { hasNextPage endCursor hasPreviousPage startCursor }
    }
  }
}
"""


async def test_the_rows_are_paged_like_every_list(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    # given a preview of 60 rows, every fifth an error
    file = "username,type\r\n" + "".join(
        f"p{i:02},{'PARENT' if i % 5 == 0 else 'PUPIL'}\r\n" for i in range(60)
    )
    job = (await preview(http, school, file.encode()))["job"]

    async def rows(**arguments: Any) -> dict[str, Any]:
        body = await graphql(http, ROWS, {"id": job["id"], **arguments}, token=school.admin_token)
        assert "errors" not in body, body
        page: dict[str, Any] = body["data"]["importJob"]["rows"]
        return page

    def names(page: dict[str, Any]) -> list[str]:
        return [edge["node"]["username"] for edge in page["edges"]]

    # then 50 a page unless asked, on through the cursor
    first = await rows()
    assert first["totalCount"] == 60 and names(first) == [f"p{i:02}" for i in range(50)]
    assert first["pageInfo"]["hasNextPage"] and not first["pageInfo"]["hasPreviousPage"]
    rest = await rows(after=first["pageInfo"]["endCursor"])
    assert names(rest) == [f"p{i:02}" for i in range(50, 60)] and not rest["pageInfo"]["hasNextPage"]
    # backwards
    back = await rows(last=3, before=rest["pageInfo"]["startCursor"])
    assert names(back) == ["p47", "p48", "p49"] and back["pageInfo"]["hasPreviousPage"]
    assert back["pageInfo"]["hasNextPage"]
    # one action's rows, the cursor good across actions
    errors = await rows(action="ERROR", first=5)
    assert errors["totalCount"] == 12 and names(errors) == ["p00", "p05", "p10", "p15", "p20"]
    more = await rows(action="ERROR", first=100, after=errors["pageInfo"]["endCursor"])
    assert names(more) == [f"p{i:02}" for i in range(25, 60, 5)]
    assert (await rows(first=0))["edges"] == []
    # with an action, a page says whether that action's rows lie beyond its cursor, not merely that it has one
    after_p00, before_p59 = first["edges"][0]["cursor"], rest["edges"][-1]["cursor"]
    created = await rows(action="CREATE", first=2, after=after_p00)
    assert names(created) == ["p01", "p02"] and not created["pageInfo"]["hasPreviousPage"]
    assert (await rows(action="ERROR", first=2, after=after_p00))["pageInfo"]["hasPreviousPage"]
    last_error = await rows(action="ERROR", last=1, before=before_p59)
    assert names(last_error) == ["p55"] and not last_error["pageInfo"]["hasNextPage"]
    assert (await rows(action="CREATE", last=1, before=rest["edges"][-2]["cursor"]))["pageInfo"][
        "hasNextPage"
    ]

    # and what no list takes is refused as the caller's mistake, hand-made cursors among it
    hand_made = [
        {"after": encode_cursor([imports.ROW_CURSOR, place])} for place in ("-1", "+1", " 2", "1_0", "\u0663")
    ]
    for arguments in (
        {"first": 501},
        {"first": -1},
        {"first": 2, "last": 2},
        {"after": "bm90LWEtY3Vyc29y"},
        *hand_made,
    ):
        body = await graphql(http, ROWS, {"id": job["id"], **arguments}, token=school.admin_token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_REQUEST"], arguments
    users = await graphql(http, "{ users(first: 1) { pageInfo { endCursor } } }", token=school.admin_token)
    cursor = users["data"]["users"]["pageInfo"]["endCursor"]
    body = await graphql(http, ROWS, {"id": job["id"], "after": cursor}, token=school.admin_token)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_REQUEST"]


async def test_generated_passwords_are_sealed_and_taken_once_by_the_admin_who_confirmed(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given an applied file that generated two passwords
    job = (await preview(http, school, ROSTER))["job"]
    assert (await start(http, school, job["id"]))["errors"] == []
    ended = await finished(http, school, job["id"])
    assert ended["status"] == "SUCCEEDED" and ended["generatedPasswordsAvailable"] is True
    assert ended["confirmedBy"] is not None and ended["finishedAt"] is not None
    assert ended["generatedPasswordsAvailableUntil"] > ended["finishedAt"]
    async with school_scope(db, school.id) as session:
        sealed = (
            await session.execute(text("select sealed_generated_passwords from import_jobs"))
        ).scalar_one()
    assert sealed is not None

    # when another admin asks for them, they are not theirs
    deputy = await make_user(db, school, username="deputy", type=UserType.TEACHER, is_admin=True)
    deputy_token = await sign_in_as(db, school, deputy)
    assert (await finished(http, school, job["id"], token=deputy_token))[
        "generatedPasswordsAvailable"
    ] is False
    other = await take(http, school, job["id"], token=deputy_token)
    assert [(e["code"], e["field"]) for e in other["errors"]] == [("NOT_YOUR_IMPORT", "jobId")]
    assert other["generatedPasswords"] == []

    # when the admin who confirmed takes them twice at once (both waiting on the job's row meanwhile)
    async with school_scope(db, school.id) as session:
        await session.execute(text("select id from import_jobs for update"))
        takes = [asyncio.create_task(take(http, school, job["id"])) for _ in range(2)]
        await asyncio.sleep(0.5)
    results = await asyncio.gather(*takes)

    # then exactly one gets them, and the other is told they are taken
    won = [r for r in results if r["errors"] == []]
    lost = [r for r in results if r["errors"]]
    assert len(won) == 1 and len(lost) == 1, results
    assert [e["code"] for e in lost[0]["errors"]] == ["GENERATED_PASSWORDS_TAKEN"]
    generated = {g["username"]: g["password"] for g in won[0]["generatedPasswords"]}
    assert list(generated) == ["ben.c", "cara.d"]
    assert won[0]["job"]["generatedPasswordsAvailable"] is False
    # the sealed box never held them in plain, and is gone
    assert not any(password.encode() in sealed for password in generated.values())
    async with school_scope(db, school.id) as session:
        now = (
            await session.execute(
                text("select sealed_generated_passwords, generated_passwords_taken_at from import_jobs")
            )
        ).one()
    assert now[0] is None and now[1] is not None
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "ben.c", "p": generated["ben.c"]})
    assert login["data"]["login"]["errors"] == []
    unknown = await take(http, school, "00000000-0000-4000-8000-000000000000")
    assert [e["code"] for e in unknown["errors"]] == ["NOT_FOUND"]


async def test_generated_passwords_expire_an_hour_after_the_end(
    http: httpx.AsyncClient,
    db: Database,
    owner_engine: AsyncEngine,
    migrated: EmbeddedServer,
    school: SchoolFixture,
) -> None:
    job = (await preview(http, school, ROSTER))["job"]
    assert (await start(http, school, job["id"]))["errors"] == []
    assert (await finished(http, school, job["id"]))["generatedPasswordsAvailable"] is True
    async with school_scope(db, school.id) as session:
        await session.execute(text("update import_jobs set finished_at = now() - interval '61 minutes'"))
    late = await take(http, school, job["id"])
    assert [e["code"] for e in late["errors"]] == ["GENERATED_PASSWORDS_EXPIRED"]
    assert (await finished(http, school, job["id"]))["generatedPasswordsAvailable"] is False
    # and the purge erases what is no longer takeable
    assert await forget_expired_import_passwords(migrated.urls().owner) >= 1
    async with school_scope(db, school.id) as session:
        sealed = (
            await session.execute(text("select sealed_generated_passwords from import_jobs"))
        ).scalar_one()
    assert sealed is None


async def test_a_file_with_every_password_typed_has_none_to_take(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    file = b"username,type,password\r\namy,PUPIL,cat-1\r\nben,PUPIL,dog-2\r\n"
    applied = await confirm(http, school, (await preview(http, school, file))["job"]["id"])
    assert applied["job"]["status"] == "SUCCEEDED"
    assert applied["job"]["generatedPasswordsAvailable"] is False
    assert applied["job"]["generatedPasswordsAvailableUntil"] is None
    none = await take(http, school, applied["job"]["id"])
    assert [e["code"] for e in none["errors"]] == ["NO_GENERATED_PASSWORDS"]


async def test_a_running_job_is_failed_on_read_only_when_its_heartbeat_has_stopped(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given reads that fail a RUNNING job that has not moved for a second, and a heartbeat of 0.2 s
    monkeypatch.setattr(imports, "STALE_IMPORT", timedelta(seconds=1))
    monkeypatch.setattr(imports, "HEARTBEAT_SECONDS", 0.2)
    job = (await preview(http, school, ROSTER))["job"]

    # when its apply waits for the roster's lock (held elsewhere) for three seconds
    async with school_scope(db, school.id) as session:
        await session.execute(text("select id from schools for update"))
        assert (await start(http, school, job["id"]))["errors"] == []
        states = []
        for _ in range(15):
            await asyncio.sleep(0.2)
            states.append(
                (await graphql(http, PROGRESS, {"id": job["id"]}, token=school.admin_token))["data"]
            )

    # then every read found it RUNNING, and it ended as it should once the lock was free
    assert all(state["importJob"]["status"] == "RUNNING" for state in states), states
    assert (await finished(http, school, job["id"]))["status"] == "SUCCEEDED"

    # and a RUNNING job whose worker is gone (nothing moves it: no heartbeat) is failed as it is read
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "update import_jobs set status = 'RUNNING', sealed_generated_passwords = null, "
                "updated_at = now() - interval '2 seconds'"
            )
        )
    gone = await finished(http, school, job["id"])
    assert (gone["status"], gone["failureReason"]) == ("FAILED", STALE_REASON)


async def test_an_apply_cancelled_at_shutdown_fails_its_job_and_writes_nothing(
    http: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    school: SchoolFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given an apply under way whose hashing never ends
    job = (await preview(http, school, ROSTER))["job"]
    before = await roster(db, school)
    forever = asyncio.Event()

    async def never(password: str) -> str:
        await forever.wait()
        return ""

    monkeypatch.setattr(passwords, "hash_password_in_bulk", never)
    admin = Actor(id=school.admin_id, label="admin")
    secret = settings.login_code_secret
    started = await imports.start_import(
        db, school_id=school.id, actor=admin, job_id=parse_id(job["id"], field="id"), server_secret=secret
    )
    tasks = BackgroundTasks()
    tasks.start(imports.apply_import(db, started.work, actor=admin, server_secret=secret), name="import")

    # when the worker shuts down with a short grace
    await asyncio.sleep(0.3)
    await tasks.shutdown(0.3)

    # then the job is FAILED with the reason a stopped server gives, and the roster is as it was
    assert len(tasks) == 0
    body = await graphql(http, JOB_NOW, {"id": job["id"]}, token=school.admin_token)
    ended = body["data"]["importJob"]
    assert (ended["status"], ended["failureReason"]) == ("FAILED", STALE_REASON)
    assert await roster(db, school) == before
    with pytest.raises(RuntimeError):
        tasks.start(asyncio.sleep(0), name="late")


async def test_the_background_waits_out_its_grace_for_work_that_ends() -> None:
    tasks = BackgroundTasks()
    done = []

    async def work() -> None:
        await asyncio.sleep(0.2)
        done.append(True)

    tasks.start(work(), name="short")
    await tasks.shutdown(5)
    assert done == [True]


async def test_a_job_failed_while_its_apply_waits_is_not_applied(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given an apply waiting for the roster's lock
    before = await roster(db, school)
    job = (await preview(http, school, ROSTER))["job"]
    async with school_scope(db, school.id) as session:
        await session.execute(text("select id from schools for update"))
        assert (await start(http, school, job["id"]))["errors"] == []
        await asyncio.sleep(0.5)
        # when the job is failed meanwhile (as a reader that thought its worker gone would)
        async with school_scope(db, school.id) as other:
            await other.execute(text("update import_jobs set status = 'FAILED', failure_reason = 'gone'"))

    # then it stays FAILED, and the apply, once it has the lock, writes nothing
    await asyncio.sleep(1.0)
    await asyncio.wait_for(_applies_ended(http), 60)
    body = await graphql(http, JOB_NOW, {"id": job["id"]}, token=school.admin_token)
    assert (body["data"]["importJob"]["status"], body["data"]["importJob"]["failureReason"]) == (
        "FAILED",
        "gone",
    )
    assert await roster(db, school) == before


async def _applies_ended(http: httpx.AsyncClient) -> None:
    """Until the server's background applies have all ended."""
    while any(task.get_name().startswith("import ") for task in asyncio.all_tasks()):
        await asyncio.sleep(0.05)


async def test_a_stopping_server_takes_no_confirmation(
    http: httpx.AsyncClient, app: Starlette, school: SchoolFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = (await preview(http, school, ROSTER))["job"]
    monkeypatch.setattr(app.state.background, "_closing", True)
    refused = await start(http, school, job["id"])
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [("IMPORT_NOT_CONFIRMABLE", "jobId")]
    monkeypatch.undo()
    body = await graphql(http, PROGRESS, {"id": job["id"]}, token=school.admin_token)
    assert body["data"]["importJob"]["status"] == "PREVIEW"
    assert (await confirm(http, school, job["id"]))["job"]["status"] == "SUCCEEDED"


@pytest.mark.parametrize("since", ["a new user took the username", "a pupil joined whom the file leaves out"])
async def test_an_apply_touches_no_one_the_preview_did_not_show(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, loaded: dict[str, Any], since: str
) -> None:
    # given a preview that restores Amy, deleted (and, for the second case, removes the pupils the file leaves out)
    body = await graphql(http, USERS, {"s": "amy.b"}, token=school.admin_token)
    (amy,) = [edge["node"]["id"] for edge in body["data"]["users"]["edges"]]
    assert (await graphql(http, DELETE, {"ids": [amy]}, token=school.admin_token))["data"]["deleteUsers"][
        "errors"
    ] == []
    file = b"username,first_name,surname,type\r\namy.b,Amy,Restored,PUPIL\r\n"
    job = (await preview(http, school, file, remove=since.startswith("a pupil")))["job"]
    assert job["rows"][0]["action"] == "RESTORE"

    # when, before it is confirmed, the roster changes under it
    if since.startswith("a new user"):
        stranger = await make_user(db, school, username="amy.b", first_name="Someone", surname="Else")
    else:
        stranger = await make_user(db, school, username="newcomer", first_name="New", surname="Comer")
    ended = (await confirm(http, school, job["id"]))["job"]

    # then the apply refuses, and the newcomer, and everyone else, are as they were
    assert ended["status"] == "FAILED" and "roster changed" in ended["failureReason"], ended
    async with school_scope(db, school.id) as session:
        surname, deleted = (
            await session.execute(
                text("select surname, deleted_at is not null from users where id = :id"), {"id": stranger}
            )
        ).one()
        amy_deleted = (
            await session.execute(
                text("select deleted_at is not null from users where id = :id"),
                {"id": parse_id(amy, field="id")},
            )
        ).scalar_one()
    assert (surname, deleted, amy_deleted) == ("Else" if since.startswith("a new") else "Comer", False, True)


async def test_applies_at_once_hold_one_connection_each(
    http: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    db: Database,
    migrated: EmbeddedServer,
    settings: Settings,
) -> None:
    # given a worker that keeps two connections, and two schools' imports started
    small = Database(migrated.urls().app, pool_size=1)
    small.engine.pool._timeout = 5  # type: ignore[attr-defined]  # a wait for a connection fails soon
    try:
        works = []
        for school in [await make_school(owner_engine, db) for _ in range(2)]:
            job = (await preview(http, school, b"username,type,password\r\nsolo.a,PUPIL,Cat-12345\r\n"))[
                "job"
            ]
            admin = Actor(id=school.admin_id, label="admin")
            started = await imports.start_import(
                db,
                school_id=school.id,
                actor=admin,
                job_id=parse_id(job["id"], field="id"),
                server_secret=settings.login_code_secret,
            )
            works.append((admin, started.work))

        # when both apply at once on it (a progress writer never holds a connection while its apply waits)
        ended = await asyncio.gather(
            *(
                imports.apply_import(small, work, actor=admin, server_secret=settings.login_code_secret)
                for admin, work in works
            )
        )

        # then both succeed, and no connection is left out of the pool
        assert ended == [imports.ImportStatus.SUCCEEDED] * 2
        assert small.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await small.dispose()
