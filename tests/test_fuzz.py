"""Schemathesis fuzzes the live GraphQL API over real HTTP, signed in as an admin, and SCIM at /scim/v2 with a
provisioning token (from tests/data/scim-openapi.json: SCIM itself publishes no OpenAPI document).

Every operation of the schema gets a fixed number of generated requests (deterministic: hypothesis is
derandomized), and none may answer with a 5xx, an unmasked internal error, a stack trace or SQL. Odd
input must come back as a business error in the payload or as a top-level BAD_REQUEST.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from graphql import get_introspection_query
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.graphql import nodes
from schemathesis.schemas import APIOperation
from schemathesis.specs.graphql.schemas import GraphQLSchema
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import ApiScope
from db.engine import Database
from db.models import Provider, UserType
from db.pagination import encode_cursor
from tests.conftest import SchoolFixture, make_api_token, make_school, make_user, sign_in_as
from tests.conftest import graphql as post
from tests.oneroster_spec import spec as oneroster_spec
from tests.oneroster_spec import violations as oneroster_violations
from tests.test_oneroster import make_client as oneroster_client

# Per operation: valid documents with generated values, then documents that break the schema (wrong types,
# missing arguments), which must be refused as such.
EXAMPLES = ((GenerationMode.POSITIVE, 16), (GenerationMode.NEGATIVE, 4))
# A request sent as JSON cannot carry a file, so the generator puts plain values where an Upload goes: the
# server must refuse them cleanly too.
schemathesis.graphql.scalar("Upload", st.one_of(st.text(max_size=20).map(nodes.String), st.just(nodes.Null)))

# What a driver error or a stack trace looks like when it slips through to the client.
LEAKS = re.compile(
    r'Traceback \(most recent call last\)|File "[^"]+", line \d+|\[SQL: |sqlalchemy\.'
    r"|asyncpg\.|psycopg|Background on this error|invalid byte sequence for encoding"
    r"|syntax error at or near|violates (?:unique|foreign key|check|not-null) constraint"
)

CREATE_CLASS = """
mutation ($name: String!, $kind: ClassKind!) {
  createClass(name: $name, kind: $kind) { schoolClass { id } errors { code field } }
}
"""
ASSIGN = "mutation ($c: ID!, $u: [ID!]!) { assignClass(classId: $c, userIds: $u) { errors { code } } }"


def problems_in(status: int, content_type: str, text: str) -> list[str]:
    """What is wrong with one answer of the server: nothing when it is a success or a clean refusal."""
    found = [f"status {status}"] if status >= 500 else []
    found += [f"leaks internals: {match.group(0)!r}" for match in [LEAKS.search(text)] if match]
    if not content_type.startswith("application/json"):
        return found if status >= 400 else [*found, f"a {status} answer that is not JSON"]
    body = json.loads(text)
    for error in (body.get("errors") or []) if isinstance(body, dict) else ["not a JSON object"]:
        code = (error.get("extensions") or {}).get("code") if isinstance(error, dict) else None
        if not isinstance(error, dict) or code == "INTERNAL_SERVER_ERROR":
            found.append(f"internal error: {error}")
    return found


async def seeded_school(owner_engine: AsyncEngine, db: Database, http: httpx.AsyncClient) -> SchoolFixture:
    """A school with pupils, a teacher and classes, so lists and nested fields have something to show."""
    school = await make_school(owner_engine, db)
    pupils = [str(await make_user(db, school, first_name=f"Pupil{i}", surname=f"Fuzz{i}")) for i in range(4)]
    teacher = str(await make_user(db, school, type=UserType.TEACHER, password="teacher-pass-2026"))
    classes = (("4B", "REGISTRATION", pupils[:2]), ("Choir", "TEACHING", [*pupils, teacher]))
    for name, kind, members in classes:
        body = await post(http, CREATE_CLASS, {"name": name, "kind": kind}, token=school.admin_token)
        class_id = body["data"]["createClass"]["schoolClass"]["id"]
        body = await post(http, ASSIGN, {"c": class_id, "u": members}, token=school.admin_token)
        assert body["data"]["assignClass"]["errors"] == []
    return school


def fuzz_operation(
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    examples: int,
    send: Callable[[Case[Any]], list[str]],
) -> None:
    """Generate `examples` requests for one operation, deterministically; fail on the first bad answer."""

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def example(case: Case[Any]) -> None:
        found = send(case)
        assert not found, f"{operation.label}: {found}\n{case.body!s}"

    example()


def fuzz_operations(
    schema: GraphQLSchema, base_url: str, fresh_token: Callable[[], str], client_addresses: Iterator[str]
) -> tuple[Counter[str], dict[str, str]]:
    """Fuzz every operation, one after another (in a worker thread: the server runs on the test's loop); how
    many requests each operation got, and what failed."""
    counts: Counter[str] = Counter()
    failures: dict[str, str] = {}
    with requests.Session() as session:

        def send(case: Case[Any]) -> list[str]:
            counts[case.operation.label] += 1
            # Each example has a session of its own and comes from an address of its own, so a generated
            # logout, five wrong passwords retyped or a hundred failed sign-ins spoil that example alone.
            headers = {"Authorization": f"Bearer {fresh_token()}", "X-Forwarded-For": next(client_addresses)}
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
            content_type = (response.headers.get("content-type") or [""])[0]
            found = problems_in(response.status_code, content_type, response.text)
            # Every example must really run as the admin, or it would test nothing but the sign-in check.
            found += ["answered as if signed out"] if '"UNAUTHENTICATED"' in response.text else []
            return [*found, response.text[:2000]] if found else []

        for result, (mode, examples) in itertools.product(list(schema.get_all_operations()), EXAMPLES):
            operation = result.ok()
            try:
                fuzz_operation(operation, mode, examples, send)
            except (AssertionError, ExceptionGroup) as error:  # go on, so that one run shows every bug
                failures[f"{operation.label} ({mode})"] = str(error)
    return counts, failures


async def test_fuzzing_every_operation_finds_no_server_error(
    server_url: str, owner_engine: AsyncEngine, db: Database, http: httpx.AsyncClient
) -> None:
    # given a school with some users and classes, and the schema as the live server tells it
    school = await seeded_school(owner_engine, db, http)
    introspection = await post(http, get_introspection_query(), token=school.admin_token)
    schema = schemathesis.graphql.from_dict(introspection)
    loop = asyncio.get_running_loop()

    def fresh_token() -> str:
        return asyncio.run_coroutine_threadsafe(sign_in_as(db, school, school.admin_id), loop).result(30)

    addresses = (f"2001:db8:f022::{n:x}" for n in itertools.count(1))
    # when every operation is fuzzed
    counts, failures = await asyncio.to_thread(
        fuzz_operations, schema, server_url + "/graphql", fresh_token, addresses
    )
    # then nothing failed, and every operation was tried
    assert not failures, "\n\n".join(failures.values())
    assert set(counts) >= {"Query.users", "Mutation.addUser", "Mutation.bulkImport", "Mutation.login"}
    assert sum(counts.values()) >= 300, counts


SCIM_OPENAPI = Path(__file__).parent / "data" / "scim-openapi.json"
SCIM_EXAMPLES = ((GenerationMode.POSITIVE, 5), (GenerationMode.NEGATIVE, 2))


def fuzz_scim(schema: Any, base_url: str, token: str) -> tuple[Counter[str], dict[str, str]]:
    """Fuzz every SCIM operation in turn (in a worker thread, like fuzz_operations); how many requests each
    got, and what failed: a 5xx, a leak of internals, or an error that is not SCIM's own JSON."""
    counts: Counter[str] = Counter()
    failures: dict[str, str] = {}
    with requests.Session() as session:

        def send(case: Case[Any]) -> list[str]:
            counts[case.operation.label] += 1
            response = case.call(
                base_url=base_url, session=session, timeout=30, headers={"Authorization": f"Bearer {token}"}
            )
            content_type = (response.headers.get("content-type") or [""])[0]
            found = [f"status {response.status_code}"] if response.status_code >= 500 else []
            leak = LEAKS.search(response.text)
            found += [f"leaks internals: {leak.group(0)!r}"] if leak else []
            if response.status_code >= 400 and content_type != "application/scim+json":
                found.append(f"a {response.status_code} answer that is not application/scim+json")
            return [*found, response.text[:2000]] if found else []

        for result, (mode, examples) in itertools.product(list(schema.get_all_operations()), SCIM_EXAMPLES):
            operation = result.ok()
            if mode == GenerationMode.NEGATIVE and not operation.body:
                continue  # a query string or a path is text whatever it says: only a body can break its types
            try:
                fuzz_operation(operation, mode, examples, send)
            except (AssertionError, ExceptionGroup) as error:
                failures[f"{operation.label} ({mode})"] = str(error)
    return counts, failures


async def test_fuzzing_scim_finds_no_server_error(
    server_url: str, owner_engine: AsyncEngine, db: Database, http: httpx.AsyncClient
) -> None:
    # given a managed school, its provisioning token and a user
    school = await make_school(owner_engine, db, provider=Provider.C2K)
    token = await make_api_token(db, school, [ApiScope.PROVISION])
    await make_user(db, school, username="amy.b")
    schema = schemathesis.openapi.from_dict(json.loads(SCIM_OPENAPI.read_text()))
    # when every SCIM operation is fuzzed
    counts, failures = await asyncio.to_thread(fuzz_scim, schema, server_url + "/scim/v2", token)
    # then nothing failed, and every operation was tried
    assert not failures, "\n\n".join(failures.values())
    assert len(counts) == 19 and sum(counts.values()) >= 90, counts


# Regressions: each odd input below once reached PostgreSQL or a resolver unchecked and came back as an
# internal error (or a 500); now it is a clear business error in the payload, or a clear refusal.

NUL = "\x00"
LOGIN = """
mutation ($school: String!, $username: String!) {
  login(school: $school, username: $username, password: "pupil-pass") { token errors { code } }
}
"""
ADD_USER = """
mutation ($input: AddUserInput!) { addUser(input: $input) { user { id } errors { code field } } }
"""
UPDATE_SURNAME = """
mutation ($id: ID!, $value: String!) {
  updateUserField(userId: $id, field: SURNAME, value: $value, expectedVersion: 1) { errors { code field } }
}
"""
RENAME_CLASS = """
mutation ($id: ID!, $name: String!) { renameClass(classId: $id, name: $name) { errors { code field } } }
"""
CREATE_TOKEN = """
mutation ($name: String!) {
  createApiToken(name: $name, scopes: [ROSTER_READ]) { token errors { code field } }
}
"""
SEARCH = """
query ($search: String, $after: String) { users(filter: {search: $search}, after: $after) { totalCount } }
"""
# An action is a name of the AuditAction enum, which GraphQL itself checks: the cursor is what reaches SQL.
AUDIT = "query ($after: String) { auditEvents(after: $after) { edges { cursor } } }"
UPLOAD_TEXT = 'mutation { bulkImport(file: "roster.csv") { job { id } errors { code } } }'


@pytest.mark.parametrize(
    "slug, username", [(NUL, "admin"), ("{slug}" + NUL, "admin"), ("{slug}", "ad" + NUL + "min")]
)
async def test_a_nul_in_a_sign_in_is_just_wrong_credentials(
    http: httpx.AsyncClient, school: SchoolFixture, slug: str, username: str
) -> None:
    variables = {"school": slug.format(slug=school.slug), "username": username}
    body = await post(http, LOGIN, variables, headers={"X-Forwarded-For": "2001:db8:f022:1::1"})
    assert body["data"]["login"] == {"token": None, "errors": [{"code": "INVALID_CREDENTIALS"}]}


@pytest.mark.parametrize("text", ["Ann" + NUL, "Ann\x07Bell"])
async def test_a_control_character_in_a_name_is_invalid_input(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, text: str
) -> None:
    # given a pupil and a class
    pupil = await make_user(db, school)
    created = await post(http, CREATE_CLASS, {"name": "5C", "kind": "TEACHING"}, token=school.admin_token)
    class_id = created["data"]["createClass"]["schoolClass"]["id"]
    # when each kind of name is given the text
    new_pupil = {"username": "ann.bell", "password": "pupil-pass", "type": "PUPIL", "firstName": text}
    attempts = [
        ("addUser", ADD_USER, {"input": new_pupil}),
        ("updateUserField", UPDATE_SURNAME, {"id": str(pupil), "value": text}),
        ("createClass", CREATE_CLASS, {"name": text, "kind": "REGISTRATION"}),
        ("renameClass", RENAME_CLASS, {"id": class_id, "name": text}),
        ("createApiToken", CREATE_TOKEN, {"name": text}),
    ]
    errors = [
        (await post(http, query, variables, token=school.admin_token))["data"][name]["errors"]
        for name, query, variables in attempts
    ]
    # then every one is refused, naming the field
    assert errors == [
        [{"code": "INVALID_INPUT", "field": field}]
        for field in ("firstName", "value", "name", "name", "name")
    ], errors


@pytest.mark.parametrize(
    "query, variables",
    [
        (SEARCH, {"search": "Ann" + NUL}),
        (SEARCH, {"after": encode_cursor([NUL, "00000000-0000-4000-8000-000000000000"])}),
        (
            AUDIT,
            {
                "after": encode_cursor(
                    ["2026-01-01T00:00:00+00:00" + NUL, "00000000-0000-4000-8000-000000000000"]
                )
            },
        ),
        (UPLOAD_TEXT, {}),
    ],
)
async def test_a_filter_cursor_or_file_postgres_cannot_take_is_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture, query: str, variables: dict[str, Any]
) -> None:
    body = await post(http, query, variables, token=school.admin_token)
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_REQUEST"], body


TOKEN_QUERY = json.dumps(CREATE_TOKEN).encode()


@pytest.mark.parametrize(
    "content",
    [
        json.dumps(
            {"query": CREATE_TOKEN, "variables": {"name": "\ud800"}}
        ).encode(),  # an unpaired surrogate
        b'{"query": ' + TOKEN_QUERY + b', "variables": {"name": "\xed\xa0\x80"}}',  # the same, UTF-8 encoded
        b'{"query": ' + TOKEN_QUERY + b', "variables": {"name": "\xff"}}',  # not UTF-8
        b"null",
        b'"{ me { id } }"',
    ],
)
async def test_a_body_that_is_not_a_json_object_of_text_is_refused(
    http: httpx.AsyncClient, school: SchoolFixture, content: bytes
) -> None:
    response = await http.post(
        "/graphql",
        content=content,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {school.admin_token}"},
    )
    assert response.status_code == 400, response.text
    assert problems_in(response.status_code, response.headers["content-type"], response.text) == []


ONEROSTER_EXAMPLES = ((GenerationMode.POSITIVE, 6), (GenerationMode.NEGATIVE, 3))


def fuzz_oneroster(schema: Any, base_url: str, token: str) -> tuple[Counter[str], dict[str, str]]:
    """Fuzz every OneRoster operation (in a worker thread): none may answer with a 5xx or leak internals, a
    success must conform to the OpenAPI description, and every refusal is OneRoster's status-info JSON."""
    counts: Counter[str] = Counter()
    failures: dict[str, str] = {}
    with requests.Session() as session:

        def send(case: Case[Any]) -> list[str]:
            counts[case.operation.label] += 1
            response = case.call(
                base_url=base_url, session=session, timeout=60, headers={"Authorization": f"Bearer {token}"}
            )
            content_type = (response.headers.get("content-type") or [""])[0]
            found = [f"status {response.status_code}"] if response.status_code >= 500 else []
            leak = LEAKS.search(response.text)
            found += [f"leaks internals: {leak.group(0)!r}"] if leak else []
            if content_type != "application/json":
                found.append(f"a {response.status_code} answer that is not application/json")
            elif response.status_code == 200:
                found += oneroster_violations(case.operation.path, response.json())
            elif "imsx_codeMajor" not in response.json():
                found.append(f"a {response.status_code} answer that is not status-info")
            if response.status_code == 401:
                found.append("answered as if signed out")
            return [*found, response.text[:2000]] if found else []

        for result, (mode, examples) in itertools.product(
            list(schema.get_all_operations()), ONEROSTER_EXAMPLES
        ):
            operation = result.ok()
            if mode == GenerationMode.NEGATIVE and operation.path.endswith("{id}"):
                continue  # only an id, and any text is an id: nothing to break but the paging parameters
            try:
                fuzz_operation(operation, mode, examples, send)
            except (AssertionError, ExceptionGroup) as error:
                failures[f"{operation.label} ({mode})"] = str(error)
    return counts, failures


async def test_fuzzing_oneroster_finds_no_server_error(
    server_url: str, owner_engine: AsyncEngine, db: Database, http: httpx.AsyncClient
) -> None:
    # given a school with pupils, a teacher and classes, and an access token
    school = await seeded_school(owner_engine, db, http)
    client_id, secret = await oneroster_client(db, school)
    response = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    token = response.json()["access_token"]
    schema = schemathesis.openapi.from_dict(oneroster_spec())
    # when every OneRoster operation (the description's and the nested ones) is fuzzed
    counts, failures = await asyncio.to_thread(fuzz_oneroster, schema, server_url, token)
    # then nothing failed, and every operation was tried
    assert not failures, "\n\n".join(failures.values())
    assert len(counts) == 34 and sum(counts.values()) >= 250, counts
