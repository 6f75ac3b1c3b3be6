"""Inputs that once gave a 500 or a masked internal error: each now gets a clear 4xx or a typed payload error,
and changes nothing. Most of them need no sign-in at all."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from db.api_tokens import ApiScope
from db.audit import Actor
from db.engine import Database
from db.errors import DomainError
from db.manage_users import UserField, update_user_field
from db.models import ImportJob, Provider, User
from db.pagination import encode_cursor
from db.scope import school_scope
from db.users import ORDERINGS, KeyKind, UserFilter, UserOrder, UserOrderField, cursor_scope, cursor_tag
from scim.filter import MAX_NESTING, MAX_TERMS
from scim.routes import public_base_url
from tests.conftest import SchoolFixture, graphql, make_api_token, make_school, make_user
from tests.qr import make_class
from tests.test_fuzz import problems_in
from web.settings import parse_public_url

NOT_A_STRING = encode_cursor(["a", 1])  # base64url('["a",1]')
CURSORS = [
    NOT_A_STRING,
    encode_cursor([1, str(uuid.uuid4())]),
    encode_cursor([["a"], {"b": 2}]),
    encode_cursor(["\ud800", str(uuid.uuid4())]),
]
# Compiled: only fields the compiled read path knows. General: `me` sends the query to Strawberry.
USERS_AFTER = (
    "query ($after: String, $field: UserOrderField!) {{ "
    "users(after: $after, orderBy: {{field: $field}}) {{ edges {{ cursor }} }} {extra} }}"
)
MEMBERS_AFTER = "query ($after: String) {{ classes {{ members(after: $after) {{ totalCount }} }} {extra} }}"
# The compiled path answers `me` too; introspection beside a roster read sends the whole query to Strawberry.
PATHS = {"compiled": "", "general": "__schema { queryType { name } }"}


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors") or []]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("field", ["SURNAME", "CREATED_AT", "TYPE"])
@pytest.mark.parametrize("cursor", CURSORS, ids=range(len(CURSORS)))
async def test_a_cursor_holding_something_other_than_text_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture, path: str, field: str, cursor: str
) -> None:
    query = USERS_AFTER.format(extra=PATHS[path])
    body = await graphql(http, query, {"after": cursor, "field": field}, token=school.admin_token)
    assert error_codes(body) == ["BAD_REQUEST"], body


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cursor", CURSORS, ids=range(len(CURSORS)))
async def test_a_class_members_cursor_holding_something_other_than_text_is_a_bad_request(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, path: str, cursor: str
) -> None:
    await make_class(db, school, "6A", await make_user(db, school))
    body = await graphql(
        http, MEMBERS_AFTER.format(extra=PATHS[path]), {"after": cursor}, token=school.admin_token
    )
    assert error_codes(body) == ["BAD_REQUEST"], body


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEP = nested(5000)
SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.mark.parametrize("depth", [100, 5000])
async def test_a_json_body_nested_thousands_deep_is_refused(http: httpx.AsyncClient, depth: int) -> None:
    # GraphQL by POST and by GET, signed out
    body = '{"query": "{ me { id } }", "variables": {"a": ' + nested(depth) + "}}"
    posted = await http.post("/graphql", content=body, headers={"Content-Type": "application/json"})
    variables = '{"a": ' + nested(depth) + "}"
    got = await http.get("/graphql", params={"query": "{ me { id } }", "variables": variables})
    for response in (posted, got):
        assert response.status_code == 400, response.text
        assert "nested" in response.text
        assert problems_in(response.status_code, response.headers["content-type"], response.text) == []


@pytest.fixture
async def provisioning(owner_engine: AsyncEngine, db: Database) -> tuple[SchoolFixture, dict[str, str]]:
    school = await make_school(owner_engine, db, provider=Provider.C2K)
    return school, {"Authorization": f"Bearer {await make_api_token(db, school, [ApiScope.PROVISION])}"}


async def users_in(db: Database, school: SchoolFixture) -> int:
    async with school_scope(db, school.id) as session:
        return (await session.execute(select(func.count()).select_from(User))).scalar_one()


def scim_refusal(response: httpx.Response) -> tuple[int, str | None]:
    assert response.headers["content-type"] == "application/scim+json", response.text
    found = response.json()
    assert found["status"] == str(response.status_code), found
    assert len(found["detail"]) < 300, found  # the input is never echoed whole
    return response.status_code, found.get("scimType")


@pytest.mark.parametrize(
    "body",
    [
        '{"schemas": ["' + SCIM_USER + '"], "userName": "amy", "userType": "Pupil", "name": ' + DEEP + "}",
        '{"schemas": ["'
        + SCIM_USER
        + '"], "userName": "amy", "userType": "Pupil", "x": '
        + nested(100)
        + "}",
        '{"schemas": ["' + SCIM_USER + '"], "userName": "amy", "userType": "Pupil", "externalId": "\\ud800"}',
        '{"schemas": ["' + SCIM_USER + '"], "userName": "amy", "userType": "Pupil", "externalId": NaN}',
    ],
)
async def test_a_scim_body_nested_thousands_deep_or_with_odd_text_is_refused(
    http: httpx.AsyncClient, db: Database, provisioning: tuple[SchoolFixture, dict[str, str]], body: str
) -> None:
    school, headers = provisioning
    before = await users_in(db, school)
    response = await http.post("/scim/v2/Users", content=body, headers=headers)
    assert scim_refusal(response) == (400, "invalidSyntax")
    assert await users_in(db, school) == before


async def test_a_nul_in_an_external_id_is_refused(
    http: httpx.AsyncClient, db: Database, provisioning: tuple[SchoolFixture, dict[str, str]]
) -> None:
    school, headers = provisioning
    before = await users_in(db, school)
    body = {"schemas": [SCIM_USER], "userName": "amy", "userType": "Pupil", "externalId": "e-\x00"}
    response = await http.post("/scim/v2/Users", json=body, headers=headers)
    assert scim_refusal(response) == (400, "invalidValue")
    assert await users_in(db, school) == before


TERMS = 'userName eq "a"'
FILTERS = [
    'userName eq "a\\u0000"',
    'externalId eq "\\u0000"',
    'userName eq "\\ud800"',
    'userName sw "\\udfff"',
    "userName eq " + "1" * 5000,
    "userName eq 1e" + "9" * 5000,
    "(" * 300 + TERMS + ")" * 300,
    "not(" * 300 + TERMS + ")" * 300,
    "groups[" * 300 + 'value eq "x"' + "]" * 300,
    " or ".join(["id pr"] * 1500),
    " and ".join(["id pr"] * 1500),
    " or ".join([TERMS] * 2000),
]


@pytest.mark.parametrize("text", FILTERS, ids=range(len(FILTERS)))
async def test_a_scim_filter_postgres_or_the_parser_cannot_take_is_invalid(
    http: httpx.AsyncClient, provisioning: tuple[SchoolFixture, dict[str, str]], text: str
) -> None:
    _, headers = provisioning
    listed = await http.get("/scim/v2/Users", params={"filter": text}, headers=headers)
    searched = await http.post("/scim/v2/Users/.search", json={"filter": text}, headers=headers)
    assert [scim_refusal(listed), scim_refusal(searched)] == [(400, "invalidFilter")] * 2


@pytest.mark.parametrize("start", ["99999999999999999999", "1" * 5000, "²"])
async def test_a_start_index_out_of_range_is_invalid(
    http: httpx.AsyncClient, provisioning: tuple[SchoolFixture, dict[str, str]], start: str
) -> None:
    _, headers = provisioning
    response = await http.get("/scim/v2/Users", params={"startIndex": start}, headers=headers)
    assert scim_refusal(response) == (400, "invalidValue")


PATHS_IN_PATCH = [
    "name[" + "(" * 300 + 'x eq "a"' + ")" * 300 + "]",
    "emails[" + " or ".join(['type eq "work"'] * 3000) + "]",
    "a" * 5000 + "[",
    'emails[value eq "' + "\\u0000" + '"]',
]


@pytest.mark.parametrize("path", PATHS_IN_PATCH, ids=range(len(PATHS_IN_PATCH)))
async def test_a_patch_path_nested_hundreds_deep_or_very_long_is_invalid(
    http: httpx.AsyncClient, db: Database, provisioning: tuple[SchoolFixture, dict[str, str]], path: str
) -> None:
    _school, headers = provisioning
    created = await http.post(
        "/scim/v2/Users",
        json={"schemas": [SCIM_USER], "userName": "ben", "userType": "Pupil"},
        headers=headers,
    )
    user_id = created.json()["id"]
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": path, "value": "x"}],
    }
    response = await http.patch(f"/scim/v2/Users/{user_id}", json=patch, headers=headers)
    assert scim_refusal(response) == (400, "invalidPath")


UPLOAD = "mutation ($file: Upload!) { bulkImport(file: $file) { job { id } errors { code field } } }"
BAD_MAPS = [
    "[1, 2]",
    '{"0": ["variables.file.name"]}',
    '{"0": ["variables.list.5"]}',
    '{"0": ["variables.list.x"]}',
    '{"0": [1]}',
    '{"0": "variables.file"}',
    '{"0": [["variables"]]}',
    '"variables.file"',
    '{"0": ["variables"]}',
    '{"0": ["query"]}',
    '{"0": [""]}',
]


async def test_a_malformed_multipart_map_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None, "list": [None]}})
    statuses = []
    for files_map in BAD_MAPS:
        response = await http.post(
            "/graphql",
            data={"operations": operations, "map": files_map},
            files={"0": ("roster.csv", b"username\n", "text/csv")},
            headers={"Authorization": f"Bearer {school.admin_token}"},
        )
        assert problems_in(response.status_code, response.headers["content-type"], response.text) == [], (
            files_map,
            response.text,
        )
        statuses.append(response.status_code)
    assert statuses == [400] * len(BAD_MAPS)


async def import_jobs(db: Database, school: SchoolFixture) -> int:
    async with school_scope(db, school.id) as session:
        return (await session.execute(select(func.count()).select_from(ImportJob))).scalar_one()


@pytest.mark.parametrize("name", [b"roster\x00.csv", b"roster\x07.csv", b"\xed\xa0\x80.csv"])
async def test_a_control_character_in_an_uploaded_file_name_is_a_payload_error(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, name: bytes
) -> None:
    boundary = b"rollcallboundary"
    operations = json.dumps({"query": UPLOAD, "variables": {"file": None}}).encode()
    parts = [
        b'Content-Disposition: form-data; name="operations"\r\n\r\n' + operations,
        b'Content-Disposition: form-data; name="map"\r\n\r\n{"0": ["variables.file"]}',
        b'Content-Disposition: form-data; name="0"; filename="' + name + b'"\r\n'
        b"Content-Type: text/csv\r\n\r\nusername,first name,surname,type\r\namy,Amy,Bell,pupil\r\n",
    ]
    content = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    content += b"--" + boundary + b"--\r\n"
    response = await http.post(
        "/graphql",
        content=content,
        headers={
            "Authorization": f"Bearer {school.admin_token}",
            "Content-Type": f"multipart/form-data; boundary={boundary.decode()}",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["bulkImport"] == {
        "job": None,
        "errors": [{"code": "INVALID_INPUT", "field": "file"}],
    }, response.text
    assert await import_jobs(db, school) == 0


LOGIN = """
mutation ($school: String!, $username: String!) {
  login(school: $school, username: $username, password: "pupil-pass") {
    user { username registrationClass { name } teachingClasses { name } } errors { code }
  }
}
"""
LOGIN_CARD = "query ($ids: [ID!]) { loginCards(userIds: $ids) { code } }"
LOGIN_WITH_QR = """
mutation ($code: String!) {
  loginWithQr(code: $code) { user { username registrationClass { name } } errors { code } }
}
"""


async def test_the_user_a_sign_in_returns_shows_their_classes(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a pupil in registration class 6B
    pupil = await make_user(db, school, username="cara")
    await make_class(db, school, "6B", pupil)
    client = {"X-Forwarded-For": f"2001:db8:bad::{uuid.uuid4().hex[:4]}"}
    # when they sign in with their password, and with their login card, asking for their class
    by_password = await graphql(http, LOGIN, {"school": school.slug, "username": "cara"}, headers=client)
    cards = await graphql(http, LOGIN_CARD, {"ids": [str(pupil)]}, token=school.admin_token)
    code = cards["data"]["loginCards"][0]["code"]
    by_card = await graphql(http, LOGIN_WITH_QR, {"code": code}, headers=client)
    # then both answer with it
    assert by_password == {
        "data": {
            "login": {
                "errors": [],
                "user": {"username": "cara", "registrationClass": {"name": "6B"}, "teachingClasses": []},
            }
        }
    }
    assert by_card == {
        "data": {
            "loginWithQr": {"errors": [], "user": {"username": "cara", "registrationClass": {"name": "6B"}}}
        }
    }


async def test_two_admins_renaming_two_users_to_one_username_at_once(
    db: Database, school: SchoolFixture
) -> None:
    # given two pupils
    first, second = await make_user(db, school), await make_user(db, school)
    actor = Actor(id=school.admin_id, label="admin")

    async def rename(session: Any, user_id: uuid.UUID) -> User:
        return await update_user_field(
            session,
            school_id=school.id,
            actor=actor,
            user_id=user_id,
            field=UserField.USERNAME,
            value="dara",
            expected_version=1,
        )

    # when one admin's rename is written but not yet committed, and the other's runs meanwhile
    async with school_scope(db, school.id) as session:
        await rename(session, first)

        async def other() -> DomainError | None:
            try:
                async with school_scope(db, school.id) as other_session:
                    await rename(other_session, second)
            except DomainError as error:
                return error
            return None

        racing = asyncio.create_task(other())
        await asyncio.sleep(0.5)  # the second rename waits on the unique index for the first to commit
        assert not racing.done()
    refused = await racing
    # then the second gets USERNAME_TAKEN, and only the first was renamed
    assert refused is not None and [p.code for p in refused.problems] == ["USERNAME_TAKEN"]
    async with school_scope(db, school.id) as session:
        found = {
            user_id: username
            for user_id, username in await session.execute(
                select(User.id, User.username).where(User.id.in_([first, second]))
            )
        }
    assert found[first] == "dara" and found[second] != "dara"


async def test_a_filter_at_every_limit_still_runs(
    http: httpx.AsyncClient, provisioning: tuple[SchoolFixture, dict[str, str]]
) -> None:
    _, headers = provisioning
    created = await http.post(
        "/scim/v2/Users",
        json={"schemas": [SCIM_USER], "userName": "ben", "userType": "Pupil"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    largest = [
        " or ".join(['userName eq "ben"'] * MAX_TERMS),
        "not(" * MAX_NESTING + 'userName eq "ben"' + ")" * MAX_NESTING,
    ]  # an even number of nots
    for text in largest:
        response = await http.get("/scim/v2/Users", params={"filter": text}, headers=headers)
        assert response.status_code == 200, response.text
        assert [found["userName"] for found in response.json()["Resources"]] == ["ben"]


async def test_a_forged_host_header_never_reaches_scim_links(
    http: httpx.AsyncClient, server_url: str, provisioning: tuple[SchoolFixture, dict[str, str]]
) -> None:
    _, headers = provisioning
    forged = {**headers, "Host": "attacker.example", "X-Forwarded-Host": "attacker.example"}
    created = await http.post(
        "/scim/v2/Users",
        json={"schemas": [SCIM_USER], "userName": "ben", "userType": "Pupil"},
        headers=forged,
    )
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    assert location == created.json()["meta"]["location"]
    assert location.startswith(f"{server_url}/scim/v2/Users/") and "attacker" not in created.text
    listed = await http.get("/scim/v2/ResourceTypes", headers=forged)
    assert "attacker" not in listed.text and server_url in listed.text


def test_links_start_with_the_configuredparse_public_url() -> None:
    request = Request(
        {
            "type": "http",
            "scheme": "http",
            "server": ("10.0.0.5", 8000),
            "headers": [(b"host", b"attacker.example")],
            "path": "/scim/v2/Users",
        }
    )
    assert public_base_url(request, "https://rollcall.example.org") == "https://rollcall.example.org"
    assert public_base_url(request, None) == "http://10.0.0.5:8000"
    for bad in ("rollcall.example.org", "ftp://x", "https://", "https://a.example/?q=1"):
        with pytest.raises(ValueError, match="ROLLCALL_PUBLIC_URL"):
            parse_public_url(bad)
    assert parse_public_url("https://rollcall.example.org/") == "https://rollcall.example.org"


# Values that parse but that PostgreSQL cannot take: a number beyond bigint, a time that leaves the calendar
# when it is moved to UTC. Each is refused where it is read, as any other bad cursor or input.
OVERFLOWING_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
FEED_QUERY = "query ($after: String) { changes(after: $after) { edges { cursor } } }"
ISSUED = "2026-12-02T02:09:12+00:00"


@pytest.mark.parametrize(
    "xid, position",
    [
        ("99999999999999999999999", "0"),
        ("9223372036854775808", "0"),
        ("1", "9223372036854775808"),
        ("1_0", "0"),
        ("\u0661\u0660", "0"),  # Arabic-Indic digits, which int() reads
        ("+1", "0"),
        (" 1", "0"),
        ("01", "0"),
    ],
)
async def test_a_feed_cursor_with_a_number_postgres_cannot_take_or_not_written_plainly_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture, xid: str, position: str
) -> None:
    cursor = encode_cursor([xid, position, ISSUED])
    body = await graphql(http, FEED_QUERY, {"after": cursor}, token=school.admin_token)
    assert error_codes(body) == ["BAD_REQUEST"], body


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", OVERFLOWING_TIMES)
async def test_an_updated_since_beyond_the_calendar_in_utc_is_a_bad_value(
    http: httpx.AsyncClient, school: SchoolFixture, path: str, value: str
) -> None:
    # as a variable and as a literal, the time is refused as a DateTime that does not parse is
    by_variable = (
        "query ($v: DateTime) { users(filter: {updatedSince: $v}) { totalCount } " + PATHS[path] + " }"
    )
    inline = '{ users(filter: {updatedSince: "' + value + '"}) { totalCount } ' + PATHS[path] + " }"
    headers = {"Authorization": f"Bearer {school.admin_token}", "Accept": "application/graphql-response+json"}
    for query, variables in ((by_variable, {"v": value}), (inline, {})):
        body = await graphql(http, query, variables, token=school.admin_token)
        assert body["data"] is None and len(body["errors"]) == 1, body
        (error,) = body["errors"]
        assert "extensions" not in error and "UTC" in error["message"], body
        strict = await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
        assert strict.status_code == 400 and "UTC" in strict.text, strict.text


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", OVERFLOWING_TIMES)
async def test_a_created_at_cursor_beyond_the_calendar_in_utc_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture, path: str, value: str
) -> None:
    order = UserOrder(field=UserOrderField.CREATED_AT)
    keys = [value if key.kind == KeyKind.TIME else "x" for key in ORDERINGS[order.field]]
    tag = cursor_tag(cursor_scope(order, UserFilter()))
    cursor = encode_cursor([tag, *keys, str(uuid.uuid4())])
    query = USERS_AFTER.format(extra=PATHS[path])
    body = await graphql(http, query, {"after": cursor, "field": "CREATED_AT"}, token=school.admin_token)
    assert error_codes(body) == ["BAD_REQUEST"], body


@pytest.mark.parametrize("value", OVERFLOWING_TIMES)
async def test_an_audit_or_feed_cursor_beyond_the_calendar_in_utc_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture, value: str
) -> None:
    audit = "query ($after: String) { auditEvents(after: $after) { edges { cursor } } }"
    refused = [
        await graphql(
            http, audit, {"after": encode_cursor([value, str(uuid.uuid4())])}, token=school.admin_token
        ),
        await graphql(
            http, FEED_QUERY, {"after": encode_cursor(["1", "0", value])}, token=school.admin_token
        ),
    ]
    for body in refused:
        assert error_codes(body) == ["BAD_REQUEST"], body


@pytest.mark.parametrize("query", ["classId=%00%1B[31m", "userIds=%E2%80%AEabc,%0Aforged"])
async def test_a_login_card_selection_is_quoted_back_escaped(
    http: httpx.AsyncClient, school: SchoolFixture, query: str
) -> None:
    response = await http.get(
        f"/login-cards?{query}", headers={"Authorization": f"Bearer {school.admin_token}"}
    )
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST", error
    message = error["message"]
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in message), repr(message)
    assert "\\x00\\x1b[31m" in message or "\\u202eabc" in message, message
