"""No secret reaches a log line: every failing path is driven with known secrets, then the logs are searched.

The logs are captured twice: in-process at the root logger with every logger at DEBUG, and on the stderr of
a real `rollcall serve`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import ApiScope
from db.embedded import EmbeddedServer
from db.engine import Database
from db.models import Provider
from tests.conftest import (
    ADMIN_PASSWORD,
    SchoolFixture,
    graphql,
    make_api_token,
    make_school,
    make_user,
    sign_in_as,
)
from tests.test_operations import serve, stop

# Every secret below is unique to this file, so finding one in a log can only mean a leak.
OLD_SECRET = "MyOldSecret-123"
NEW_SECRET = "MyNewSecret-456"
LOGIN_SECRET = "Login-Secret-789"
RESET_SECRET = "Reset-Secret-246"
QR_SECRET = "rcq1.QrCardSecret-0123456789abcdef"
FILE_SECRET = "File-Secret-135"
SCIM_SECRET = "Scim-Secret-864"
VARIABLE_SECRET = "Variable-Secret-975"
SECRETS = (
    OLD_SECRET,
    NEW_SECRET,
    LOGIN_SECRET,
    RESET_SECRET,
    QR_SECRET,
    FILE_SECRET,
    SCIM_SECRET,
    VARIABLE_SECRET,
    ADMIN_PASSWORD,
    "$argon2id$",
)

CHANGE_MY_PASSWORD = (
    f'mutation {{ changeMyPassword(currentPassword: "{OLD_SECRET}", newPassword: "{NEW_SECRET}", '
    f'confirmPassword: "{NEW_SECRET}") {{ errors {{ code }} }} }}'
)
LOGIN_WITH_SIBLING = (
    'mutation Both { login(school: "SLUG", username: "admin", password: "'
    + LOGIN_SECRET
    + '") { token } out: logout { errors { code } } }'
)
RESET = (
    f'mutation ($ids: [ID!]!) {{ resetPasswords(userIds: $ids, currentPassword: "{OLD_SECRET}", '
    f'newPassword: "{RESET_SECRET}", confirmPassword: "{RESET_SECRET}") {{ errors {{ code }} }} }}'
)
QR_WITH_SIBLING = (
    f'mutation {{ loginWithQr(code: "{QR_SECRET}") {{ token }} me: logout {{ errors {{ code }} }} }}'
)
BAD_SYNTAX = 'mutation { login(school: "x", username: "y", password: "' + LOGIN_SECRET + '" { token }'
WRONG_TYPE = "query ($first: Int) { users(first: $first) { totalCount } }"
UPLOAD = "mutation ($file: Upload!) { bulkImport(file: $file) { job { id } errors { code } } }"
CONFIRM = (
    "mutation ($id: ID!, $p: String!) { confirmImport(jobId: $id, currentPassword: $p) "
    "{ job { status } errors { code } } }"
)
ROSTER = "username,type,password\r\n" + "".join(f"leak{i},PUPIL,{FILE_SECRET}{i}\r\n" for i in range(10))


async def upload(http: httpx.AsyncClient, token: str, name: str) -> httpx.Response:
    return await http.post(
        "/graphql",
        headers={"Authorization": f"Bearer {token}"},
        data={
            "operations": json.dumps({"query": UPLOAD, "variables": {"file": None}}),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": (name, ROSTER.encode(), "text/csv")},
    )


async def fail_everywhere(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, managed: SchoolFixture
) -> None:
    """Each failing path a client can reach, with secrets in literals, variables, files and bodies."""
    pupil = await make_user(db, school, username="pupil.leak", password="pupil-pass")
    pupil_token = await sign_in_as(db, school, pupil)
    await graphql(http, CHANGE_MY_PASSWORD)  # not signed in
    await graphql(http, CHANGE_MY_PASSWORD, token=school.admin_token)  # wrong current password
    await graphql(http, LOGIN_WITH_SIBLING.replace("SLUG", school.slug))
    await graphql(
        http,
        'mutation { login(school: "'
        + school.slug
        + '", username: "admin", password: "'
        + LOGIN_SECRET
        + '") { token errors { code } } }',
    )
    await graphql(http, RESET, {"ids": [str(pupil)]}, token=pupil_token)  # forbidden
    await graphql(http, RESET, {"ids": [str(pupil)]}, token=school.admin_token)  # refused re-authentication
    await graphql(http, QR_WITH_SIBLING)
    await http.post("/graphql", json={"query": BAD_SYNTAX})
    await graphql(http, WRONG_TYPE, {"first": VARIABLE_SECRET}, token=school.admin_token)

    # A file name PostgreSQL cannot store; an import confirmed with the wrong password, then one that is unknown.
    await upload(http, school.admin_token, "roster\x00.csv")
    job = (await upload(http, school.admin_token, "roster.csv")).json()["data"]["bulkImport"]["job"]
    await graphql(http, CONFIRM, {"id": job["id"], "p": OLD_SECRET}, token=school.admin_token)
    await graphql(http, CONFIRM, {"id": str(uuid.uuid4()), "p": OLD_SECRET}, token=school.admin_token)

    # SCIM: a wrong token kind, bad bodies carrying a password, a conflict.
    scim_token = await make_api_token(db, managed, [ApiScope.PROVISION])
    user = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "scim.leak",
        "userType": "Pupil",
        "password": SCIM_SECRET,
    }
    for token, body in (
        (school.admin_token, user),
        (scim_token, {**user, "userName": "bad\x00name"}),
        (scim_token, {**user, "userType": "Dragon"}),
        (scim_token, user),
        (scim_token, user),
    ):
        await http.post("/scim/v2/Users", json=body, headers={"Authorization": f"Bearer {token}"})
    await http.post(
        "/scim/v2/Users",
        content=b'{"password": "' + SCIM_SECRET.encode() + b'"',
        headers={"Authorization": f"Bearer {scim_token}", "content-type": "application/scim+json"},
    )


def assert_no_secrets(logged: str) -> None:
    for secret in SECRETS:
        assert secret not in logged, f"{secret!r} is in the logs"


async def test_failing_requests_log_no_secret(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # given every logger at DEBUG, SQLAlchemy's own statement logging included
    caplog.set_level(logging.DEBUG)
    school = await make_school(owner_engine, db)
    managed = await make_school(owner_engine, db, provider=Provider.C2K)

    # when every failing path is driven with secrets
    await fail_everywhere(http, db, school, managed)

    # then the logs name the errors and their codes, and hold none of the secrets
    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert "UNAUTHENTICATED" in logged and "FORBIDDEN" in logged
    assert_no_secrets(logged)


async def test_a_real_server_writes_no_secret_to_stderr(
    migrated: EmbeddedServer, owner_engine: AsyncEngine, db: Database, tmp_path: Path
) -> None:
    urls = migrated.urls()
    env = {
        **os.environ,
        "DATABASE_URL": urls.owner,
        "APP_DATABASE_URL": urls.app,
        "ROLLCALL_DATA_DIR": str(tmp_path / "data"),
    }
    school = await make_school(owner_engine, db)
    managed = await make_school(owner_engine, db, provider=Provider.C2K)
    served = serve(env, tmp_path / "server.log")
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
            await fail_everywhere(http, db, school, managed)
    finally:
        stop(served)
    logged = served.log.read_text()
    assert "UNAUTHENTICATED" in logged
    assert_no_secrets(logged)


async def test_a_failed_statement_names_no_parameter(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    # given a statement PostgreSQL refuses (text cannot hold a NUL), with a hash and a password as parameters
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DBAPIError) as failed:
        async with db.engine.connect() as connection:
            await connection.execute(
                text("select cast(:hash as text), cast(:password as text)"),
                {"hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "password": f"{FILE_SECRET}\x00"},
            )
    # when it is logged as the server logs a failure
    logging.getLogger("rollcall").error("import failed", exc_info=failed.value)
    # then neither the message nor the log holds the parameters
    assert_no_secrets(str(failed.value) + caplog.text)


FORGED = "2026-01-01 00:00:00,000 INFO    rollcall.access [-] GET /admin 200 1.0ms"


async def test_what_a_client_sends_cannot_forge_a_log_line_or_reach_the_terminal(
    migrated: EmbeddedServer, tmp_path: Path
) -> None:
    # given a real server writing its readable text lines
    urls = migrated.urls()
    env = {
        **os.environ,
        "DATABASE_URL": urls.owner,
        "APP_DATABASE_URL": urls.app,
        "ROLLCALL_DATA_DIR": str(tmp_path / "data"),
        "ROLLCALL_LOG_FORMAT": "text",
    }
    served = serve(env, tmp_path / "server.log")
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
            # when paths carry a newline and a forged line, ESC, NUL, DEL, C1 and a line separator
            for path in ("/healthz%0A" + FORGED.replace(" ", "%20"), "/nothing%1B[2J%00%7F%C2%85%E2%80%A8x"):
                await http.get(path)
    finally:
        stop(served)
    logged = served.log.read_text(errors="surrogateescape")
    # then every record is one line that starts as a record does, and no control character is written
    lines = logged.splitlines()
    assert not any(line.startswith(FORGED[:10]) and "/admin" in line for line in lines), logged
    assert "GET /healthz\\x0a2026-01-01" in logged, logged
    assert "GET /nothing\\x1b[2J\\x00\\x7f\\x85\\u2028x 404" in logged, logged
    for character in ("\x1b", "\x00", "\x7f", "\x85", "\u2028", "\r"):
        assert character not in logged, repr(character)


async def test_imports_in_the_background_log_no_password(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # given every logger at DEBUG
    caplog.set_level(logging.DEBUG)
    school = await make_school(owner_engine, db)
    file = ROSTER + "".join(f"made{i},PUPIL,\r\n" for i in range(5))

    # when one import applies in the background and its generated passwords are taken
    job = (await upload_file(http, school.admin_token, file)).json()["data"]["bulkImport"]["job"]
    applied = await confirm_and_wait(http, school, job["id"])
    assert applied["status"] == "SUCCEEDED"
    taken = await graphql(http, TAKE, {"id": job["id"]}, token=school.admin_token)
    generated = [g["password"] for g in taken["data"]["takeGeneratedPasswords"]["generatedPasswords"]]
    assert len(generated) == 5

    # and another fails in the middle of its apply (the database refuses a row)
    again = file.replace("made", "more").replace("leak", "drip")
    job = (await upload_file(http, school.admin_token, again)).json()["data"]["bulkImport"]["job"]
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("alter table users add constraint test_refuses_more4 check (username <> 'more4') not valid")
        )
    try:
        failed = await confirm_and_wait(http, school, job["id"])
    finally:
        async with owner_engine.begin() as connection:
            await connection.execute(text("alter table users drop constraint test_refuses_more4"))
    assert failed["status"] == "FAILED"

    # then the logs hold neither the typed passwords nor the generated ones, nor a hash
    logged = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert "import" in logged and "failed" in logged
    assert_no_secrets(logged)
    for password in generated:
        assert password not in logged


TAKE = (
    "mutation ($id: ID!) { takeGeneratedPasswords(jobId: $id) { generatedPasswords { username password } "
    "errors { code } } }"
)
STATUS = "query ($id: ID!) { importJob(id: $id) { status } }"


async def upload_file(http: httpx.AsyncClient, token: str, content: str) -> httpx.Response:
    return await http.post(
        "/graphql",
        headers={"Authorization": f"Bearer {token}"},
        data={
            "operations": json.dumps({"query": UPLOAD, "variables": {"file": None}}),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": ("roster.csv", content.encode(), "text/csv")},
    )


async def confirm_and_wait(http: httpx.AsyncClient, school: SchoolFixture, job_id: str) -> dict[str, Any]:
    started = await graphql(http, CONFIRM, {"id": job_id, "p": ADMIN_PASSWORD}, token=school.admin_token)
    assert started["data"]["confirmImport"]["errors"] == []
    while True:
        job: dict[str, Any] = (await graphql(http, STATUS, {"id": job_id}, token=school.admin_token))["data"][
            "importJob"
        ]
        if job["status"] in ("SUCCEEDED", "FAILED"):
            return job
        await asyncio.sleep(0.05)
