"""Provisioning over SCIM 2.0: a managed school's provider keeps its users and classes up to date."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from graphql import GraphQLError
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from db.api_tokens import ApiScope, list_api_tokens
from db.embedded import EmbeddedServer
from db.engine import Database
from db.models import ClassKind, Provider, School, UserType
from db.scope import bind_school, school_scope
from gql.permissions import CanReadRoster
from scim.filter import (
    Compare,
    FilterSyntaxError,
    Logical,
    Not,
    PatchPath,
    ValuePath,
    parse_filter,
    parse_path,
)
from tenants.callers import App
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
from tests.test_cli import rollcall
from tests.test_permissions import OPERATIONS, World

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
CLASS = "urn:rollcall:params:scim:schemas:extension:class:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"

USERS = """
query ($status: UserStatus) {
  users(filter: {status: $status}, first: 100) {
    edges { node { username firstName surname type externalId deletedAt
                   registrationClass { name } teachingClasses { name } } }
  }
}
"""
AUDIT = "{ auditEvents(first: 100) { edges { node { action actorId actorLabel } } } }"
LOGIN = (
    "mutation ($s: String!, $u: String!, $p: String!) { login(school: $s, username: $u, password: $p) "
    "{ token errors { code } } }"
)
CREATE_TOKEN = (
    'mutation ($scopes: [ApiScope!]!) { createApiToken(name: "IdP", scopes: $scopes) '
    "{ token apiToken { scopes } errors { code field message } } }"
)


@dataclass(frozen=True)
class Provisioning:
    """A managed school and its provider's token, as an identity service holds it."""

    school: SchoolFixture
    token: str
    http: httpx.AsyncClient

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        return await self.http.request(
            method,
            f"/scim/v2{path}",
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
        )

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200, **params: Any) -> Any:
        response = await self.request(method, path, body, **params)
        assert response.status_code == status, response.text
        if status == 204:
            return None
        assert response.headers["content-type"] == "application/scim+json"
        return response.json()

    async def create_user(self, username: str, user_type: str = "Pupil", **attributes: Any) -> dict[str, Any]:
        found: dict[str, Any] = await self.ok(
            "POST",
            "/Users",
            {"schemas": [USER], "userName": username, "userType": user_type, **attributes},
            status=201,
        )
        return found

    async def create_group(
        self, name: str, kind: str | None = None, members: tuple[str, ...] = (), **attributes: Any
    ) -> dict[str, Any]:
        body = {
            "schemas": [GROUP, CLASS],
            "displayName": name,
            "members": [{"value": m} for m in members],
            **({CLASS: {"kind": kind}} if kind else {}),
            **attributes,
        }
        found: dict[str, Any] = await self.ok("POST", "/Groups", body, status=201)
        return found

    async def patch(self, path: str, *operations: dict[str, Any], status: int = 200) -> Any:
        return await self.ok("PATCH", path, patch_op(*operations), status=status)

    async def users(self, **params: Any) -> list[str]:
        found = await self.ok("GET", "/Users", **params)
        return [resource["userName"] for resource in found["Resources"]]


@pytest.fixture
async def provider(http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database) -> Provisioning:
    school = await make_school(owner_engine, db, provider=Provider.C2K)
    return Provisioning(school, await make_api_token(db, school, [ApiScope.PROVISION]), http)


def patch_op(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


async def roster(
    http: httpx.AsyncClient, school: SchoolFixture, status: str = "ALL"
) -> dict[str, dict[str, Any]]:
    """The users table as the school's admin reads it through GraphQL."""
    body = await graphql(http, USERS, {"status": status}, token=school.admin_token)
    assert "errors" not in body, body
    return {edge["node"]["username"]: edge["node"] for edge in body["data"]["users"]["edges"]}


def scim_error(response: httpx.Response) -> tuple[int, str | None]:
    body = response.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(response.status_code) and body["detail"], body
    return response.status_code, body.get("scimType")


# A provisioning run, as an identity service makes it


async def test_a_provisioning_run_as_an_identity_service_makes_it(
    provider: Provisioning, http: httpx.AsyncClient, db: Database
) -> None:
    # given: the provider creates users and classes, looking each one up first as Entra and Okta do
    assert await provider.users(filter='userName eq "amy.b"') == []
    amy = await provider.create_user(
        "amy.b", externalId="entra-amy", name={"givenName": "Amy", "familyName": "Brown"}
    )
    ben = await provider.create_user(
        "ben.c", externalId="entra-ben", name={"givenName": "Ben", "familyName": "Cole"}
    )
    tess = await provider.create_user(
        "tess.t", "Teacher", externalId="entra-tess", name={"givenName": "Tess", "familyName": "Tully"}
    )
    seven_a = await provider.create_group("7A", "registration", (amy["id"], ben["id"]), externalId="g-7a")
    seven_b = await provider.create_group("7B", "registration", externalId="g-7b")
    maths = await provider.create_group("Maths", None, (amy["id"], tess["id"]))
    assert maths[CLASS] == {"kind": "teaching"}
    assert await provider.users(filter='externalId eq "entra-amy"') == ["amy.b"]
    ben_session = await sign_in_as(db, provider.school, uuid.UUID(ben["id"]))

    # when: Amy moves to 7B, Ben is deactivated, Amy leaves Maths and 7A is renamed (Entra's forms)
    await provider.patch(
        f"/Groups/{seven_b['id']}", {"op": "Add", "path": "members", "value": [{"value": amy["id"]}]}
    )
    await provider.patch(f"/Users/{ben['id']}", {"op": "Replace", "path": "active", "value": "False"})
    assert (await graphql(http, "{ me { id } }", token=ben_session))["data"]["me"] is None
    await provider.patch(
        f"/Groups/{maths['id']}", {"op": "remove", "path": f'members[value eq "{amy["id"]}"]'}
    )
    await provider.patch(
        f"/Groups/{seven_a['id']}", {"op": "replace", "value": {"id": seven_a["id"], "displayName": "7A Oak"}}
    )
    await provider.patch(
        f"/Users/{amy['id']}", {"op": "replace", "path": "name.familyName", "value": "Brown-Lee"}
    )

    # then: the admin sees it all through GraphQL, where each user came from included
    users = await roster(http, provider.school)
    assert users["amy.b"] | {"deletedAt": None} == {
        "username": "amy.b",
        "firstName": "Amy",
        "surname": "Brown-Lee",
        "type": "PUPIL",
        "externalId": "entra-amy",
        "deletedAt": None,
        "registrationClass": {"name": "7B"},
        "teachingClasses": [],
    }
    assert users["ben.c"]["deletedAt"] is not None
    assert users["ben.c"]["registrationClass"] == {"name": "7A Oak"}
    assert users["tess.t"]["type"] == "TEACHER" and users["tess.t"]["teachingClasses"] == [{"name": "Maths"}]
    assert users["admin"]["externalId"] is None
    assert sorted(await roster(http, provider.school, "ACTIVE")) == ["admin", "amy.b", "tess.t"]

    # when: Ben is reactivated (Okta's form) and the provider reads him back
    back = await provider.patch(f"/Users/{ben['id']}", {"op": "replace", "value": {"active": True}})
    assert back["active"] is True and back["groups"] == [
        {"value": seven_a["id"], "$ref": seven_a["meta"]["location"], "display": "7A Oak"}
    ]
    group = await provider.ok("GET", f"/Groups/{seven_a['id']}")
    assert [member["value"] for member in group["members"]] == [ben["id"]]
    assert sorted(await roster(http, provider.school, "ACTIVE")) == ["admin", "amy.b", "ben.c", "tess.t"]
    async with school_scope(db, provider.school.id) as session:
        card_version = (
            await session.execute(
                text("select login_code_version from users where id = :id"), {"id": ben["id"]}
            )
        ).scalar_one()
    assert card_version == 2  # Ben's cards printed before his deactivation no longer work


async def test_every_change_is_audited_with_the_provisioning_token_as_actor(
    provider: Provisioning, http: httpx.AsyncClient, db: Database
) -> None:
    amy = await provider.create_user("amy.b")
    group = await provider.create_group("7A", "registration", (amy["id"],))
    await provider.patch(f"/Users/{amy['id']}", {"op": "replace", "path": "active", "value": False})
    await provider.ok("DELETE", f"/Groups/{group['id']}", status=204)
    async with school_scope(db, provider.school.id) as session:
        (token,) = await list_api_tokens(session, school_id=provider.school.id)
    events = [
        edge["node"]
        for edge in (await graphql(http, AUDIT, token=provider.school.admin_token))["data"]["auditEvents"][
            "edges"
        ]
    ]
    by_provider = [event for event in events if event["actorLabel"] == f"provisioning-token:{token.id}"]
    assert {event["action"] for event in by_provider} == {
        "USER_CREATED",
        "CLASS_CREATED",
        "CLASS_MEMBERS_MOVED",
        "USER_DELETED",
        "LOGIN_CODE_ROTATED",
        "CLASS_DELETED",
    }
    assert all(event["actorId"] is None for event in by_provider)


# Users

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


async def test_a_user_from_entras_default_mapping_is_created_as_a_pupil(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    # given: the body Microsoft Entra ID sends with its default attribute mappings (no userType)
    body = {
        "schemas": [USER, ENTERPRISE],
        "externalId": "f3a1c2d4-entra-object-id",
        "userName": "amy.brown",
        "active": True,
        "displayName": "Amy Brown",
        "emails": [{"primary": True, "type": "work", "value": "amy.brown@school.example"}],
        "name": {"formatted": "Amy Brown", "familyName": "Brown", "givenName": "Amy"},
        ENTERPRISE: {"employeeNumber": "100234", "department": "Year 7"},
    }

    # when
    created = await provider.ok("POST", "/Users", body, status=201)

    # then
    assert (created["userType"], created["userName"], created["externalId"]) == (
        "Pupil",
        "amy.brown",
        "f3a1c2d4-entra-object-id",
    )
    assert created["name"] == {"givenName": "Amy", "familyName": "Brown"}
    assert "emails" not in created  # a pupil's data stays minimal
    users = await roster(http, provider.school)
    assert users["amy.brown"]["type"] == "PUPIL"


async def test_a_teachers_email_is_kept_and_a_pupils_ignored(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    # given: a teacher with a home and a primary work address, and a pupil with one
    tess = await provider.create_user(
        "tess.t",
        "Teacher",
        emails=[
            {"value": "tess@home.example", "type": "home"},
            {"value": "T.Tully@School.example", "type": "work", "primary": "True"},
        ],
    )
    amy = await provider.create_user("amy.b", emails=[{"value": "amy@home.example", "type": "work"}])

    # then
    assert tess["emails"] == [{"value": "T.Tully@School.example", "type": "work", "primary": True}]
    assert "emails" not in amy
    emails = await graphql(
        http, "{ users { edges { node { username email } } } }", token=provider.school.admin_token
    )
    assert {e["node"]["username"]: e["node"]["email"] for e in emails["data"]["users"]["edges"]} == {
        "admin": None,
        "tess.t": "T.Tully@School.example",
        "amy.b": None,
    }

    # when: Entra changes it the way it does, then a second teacher asks for the same address
    changed = await provider.patch(
        f"/Users/{tess['id']}",
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "tess.tully@school.example"},
    )
    assert changed["emails"] == [{"value": "tess.tully@school.example", "type": "work", "primary": True}]
    tom = {"schemas": [USER], "userName": "tom", "userType": "Teacher"}
    taken = await provider.request(
        "POST", "/Users", {**tom, "emails": [{"value": "TESS.tully@school.example", "type": "work"}]}
    )
    assert scim_error(taken) == (409, "uniqueness")
    bad = await provider.request(
        "POST", "/Users", {**tom, "emails": [{"value": "not an address", "primary": True}]}
    )
    assert scim_error(bad) == (400, "invalidValue")

    # when: the teacher becomes a pupil, the address goes
    demoted = await provider.patch(
        f"/Users/{tess['id']}", {"op": "replace", "path": "userType", "value": "Pupil"}
    )
    assert demoted["userType"] == "Pupil" and "emails" not in demoted


async def test_a_user_type_that_is_sent_is_honoured_whatever_its_case(provider: Provisioning) -> None:
    for username, sent, kept in (
        ("t1", "TEACHER", "Teacher"),
        ("t2", "teacher", "Teacher"),
        ("p1", "pUPIL", "Pupil"),
    ):
        created = await provider.ok(
            "POST", "/Users", {"schemas": [USER], "userName": username, "userType": sent}, status=201
        )
        assert created["userType"] == kept
    # a PUT that leaves userType out makes the user a pupil, as the same body would on create
    teacher = (await provider.ok("GET", "/Users", filter='userName eq "t1"'))["Resources"][0]
    replaced = await provider.ok("PUT", f"/Users/{teacher['id']}", {"schemas": [USER], "userName": "t1"})
    assert replaced["userType"] == "Pupil"


async def test_put_replaces_the_user_and_keeps_what_it_leaves_out_of_active_and_password(
    provider: Provisioning,
) -> None:
    amy = await provider.create_user(
        "amy.b", externalId="x-1", active=False, name={"givenName": "Amy", "familyName": "Brown"}
    )
    assert amy["active"] is False
    replaced = await provider.ok(
        "PUT", f"/Users/{amy['id']}", {"schemas": [USER], "userName": "Amy.Brown", "userType": "teacher"}
    )
    assert replaced["userName"] == "Amy.Brown" and replaced["userType"] == "Teacher"
    assert "name" not in replaced and "externalId" not in replaced and replaced["active"] is False
    assert replaced["meta"]["version"] != amy["meta"]["version"]


async def test_a_password_from_the_provider_signs_in_and_is_never_returned(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    created = await provider.create_user("amy.b", password="pencil-case")
    assert "password" not in created
    login = {"s": provider.school.slug, "u": "amy.b"}
    assert (await graphql(http, LOGIN, {**login, "p": "pencil-case"}))["data"]["login"]["token"]
    await provider.patch(f"/Users/{created['id']}", {"op": "remove", "path": "password"})
    assert (await graphql(http, LOGIN, {**login, "p": "pencil-case"}))["data"]["login"]["token"] is None
    weak = await provider.request(
        "POST", "/Users", {"schemas": [USER], "userName": "tess", "userType": "Teacher", "password": "short"}
    )
    assert scim_error(weak) == (400, "invalidValue") and "at least 8" in weak.json()["detail"]


async def test_names_with_invisible_formatting_characters_are_refused(provider: Provisioning) -> None:
    refused = await provider.request(
        "POST",
        "/Users",
        {
            "schemas": [USER],
            "userName": "amy.b",
            "userType": "Pupil",
            "name": {"givenName": "Amy\u202e", "familyName": "Brown"},
        },
    )
    assert scim_error(refused) == (400, "invalidValue")
    assert "invisible formatting character" in refused.json()["detail"]
    assert await provider.users() == []  # the provider has provisioned no one


async def test_a_user_created_without_a_password_cannot_sign_in_with_one(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    await provider.create_user("amy.b")
    for password in ("", "amy.b", "password"):
        body = await graphql(http, LOGIN, {"s": provider.school.slug, "u": "amy.b", "p": password})
        assert body["data"]["login"]["errors"] == [{"code": "INVALID_CREDENTIALS"}]


async def test_delete_is_a_soft_delete_after_which_the_user_is_gone_for_scim(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    amy = await provider.create_user("amy.b", externalId="e-1")
    await provider.ok("DELETE", f"/Users/{amy['id']}", status=204)
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert scim_error(await provider.request(method, f"/Users/{amy['id']}", {})) == (404, None)
    assert await provider.users(filter='userName eq "amy.b"') == []
    again = await provider.create_user("amy.b", externalId="e-1")
    assert again["id"] != amy["id"]
    users = await graphql(
        http,
        "{ users(filter: {status: DELETED}) { edges { node { id externalId } } } }",
        token=provider.school.admin_token,
    )
    assert users["data"]["users"]["edges"] == [{"node": {"id": amy["id"], "externalId": "e-1"}}]


async def test_users_are_found_with_filters(provider: Provisioning) -> None:
    await provider.create_user("amy.b", externalId="E-1", name={"givenName": "Amy", "familyName": "Brown"})
    await provider.create_user("ben.c", externalId="e-2", name={"givenName": "Ben", "familyName": "Cole"})
    await provider.create_user(
        "tess.t",
        "Teacher",
        externalId="E-3",
        active=False,
        name={"givenName": "Tess", "familyName": "Brownlow"},
    )
    cases = {
        'userName eq "AMY.B"': ["amy.b"],
        'UserName Eq "amy.b"': ["amy.b"],
        'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "ben.c"': ["ben.c"],
        'externalId eq "E-1"': ["amy.b"],
        'externalId eq "e-1"': [],
        'externalId sw "E"': ["amy.b", "tess.t"],
        'name.familyName co "rown"': ["amy.b", "tess.t"],
        'name.familyName ew "low"': ["tess.t"],
        'userType eq "teacher"': ["tess.t"],
        "active eq false": ["tess.t"],
        'not (active eq false) and userType eq "Pupil"': ["amy.b", "ben.c"],
        'userName eq "amy.b" or userName eq "ben.c" and active eq true': ["amy.b", "ben.c"],
        '(userName eq "amy.b" or userName eq "tess.t") and active eq true': ["amy.b"],
        'externalId pr and name.givenName sw "b"': ["ben.c"],
        'userName co "%" or userName co "_"': [],
        'meta.created gt "2000-01-01T00:00:00Z"': ["amy.b", "ben.c", "tess.t"],
        'id eq "not-a-uuid"': [],
    }
    for condition, expected in cases.items():
        assert sorted(await provider.users(filter=condition)) == expected, condition


async def test_paging_and_sorting(provider: Provisioning) -> None:
    for username, surname in (("u1", "Cole"), ("u2", "adams"), ("u3", "Brown"), ("u4", "")):
        await provider.create_user(username, name={"familyName": surname} if surname else {})
    page = await provider.ok(
        "GET", "/Users", filter='userName sw "u"', sortBy="name.familyName", startIndex=2, count=2
    )
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (4, 2, 2)
    assert [r["userName"] for r in page["Resources"]] == ["u3", "u1"]
    descending = await provider.users(filter='userName sw "u"', sortBy="userName", sortOrder="descending")
    assert descending == ["u4", "u3", "u2", "u1"]
    assert (await provider.ok("GET", "/Users", count=0))["Resources"] == []
    searched = await provider.ok(
        "POST",
        "/Users/.search",
        {
            "schemas": [SEARCH_REQUEST],
            "filter": 'userName sw "u"',
            "sortBy": "userName",
            "startIndex": 4,
            "count": 10,
            "attributes": ["userName"],
        },
    )
    (found,) = searched["Resources"]
    assert found == {"schemas": [USER], "id": found["id"], "userName": "u4"}


async def test_attributes_and_excluded_attributes(provider: Provisioning) -> None:
    amy = await provider.create_user(
        "amy.b", externalId="e", name={"givenName": "Amy", "familyName": "Brown"}
    )
    only = await provider.ok("GET", f"/Users/{amy['id']}", attributes="name.givenName,externalId")
    assert only == {"schemas": [USER], "id": amy["id"], "externalId": "e", "name": {"givenName": "Amy"}}
    without = await provider.ok("GET", f"/Users/{amy['id']}", excludedAttributes="meta,name.familyName")
    assert "meta" not in without and without["name"] == {"givenName": "Amy"}
    assert without["userName"] == "amy.b"


async def test_patch_forms_that_real_providers_send(provider: Provisioning) -> None:
    amy = await provider.create_user("amy.b", name={"givenName": "Amy", "familyName": "Brown"})
    patched = await provider.patch(
        f"/Users/{amy['id']}",
        # Entra: capitalised ops, attributes Rollcall does not keep, dotted names in a path-less value
        {"op": "Add", "path": 'emails[type eq "work"].value', "value": "amy@example.org"},
        {
            "op": "Replace",
            "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "value": "Year 7",
        },
        {"op": "Replace", "value": {"name.givenName": "Amelia", "displayName": "Amelia Brown"}},
        {"op": "Add", "path": "externalId", "value": "entra-1"},
        {"op": "remove", "path": "name.familyName"},
    )
    assert patched["name"] == {"givenName": "Amelia"} and patched["externalId"] == "entra-1"
    maths = await provider.create_group("Maths", members=(amy["id"],))
    emptied = await provider.patch(
        f"/Groups/{maths['id']}", {"op": "Remove", "path": "members", "value": [{"value": amy["id"]}]}
    )
    assert "members" not in emptied
    refilled = await provider.patch(
        f"/Groups/{maths['id']}",
        {"op": "add", "value": {"members": [{"value": amy["id"], "display": "Amelia"}]}},
    )
    assert [member["value"] for member in refilled["members"]] == [amy["id"]]


async def test_a_group_that_becomes_a_registration_group_takes_its_members_from_their_old_one(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    amy, ben = await provider.create_user("amy.b"), await provider.create_user("ben.c")
    await provider.create_group("7A", "registration", (amy["id"],))
    choir = await provider.create_group("7C", "teaching", (amy["id"], ben["id"]))
    changed = await provider.patch(
        f"/Groups/{choir['id']}", {"op": "replace", "path": f"{CLASS}:kind", "value": "Registration"}
    )
    assert changed[CLASS] == {"kind": "registration"}
    users = await roster(http, provider.school)
    assert users["amy.b"]["registrationClass"] == users["ben.c"]["registrationClass"] == {"name": "7C"}
    assert users["amy.b"]["teachingClasses"] == []


async def test_groups_are_found_with_filters(provider: Provisioning) -> None:
    amy = await provider.create_user("amy.b")
    seven_a = await provider.create_group("7A", "registration", (amy["id"],), externalId="g-1")
    await provider.create_group("Maths")
    cases = {
        'displayName eq "7a"': ["7A"],
        f'{CLASS}:kind eq "teaching"': ["Maths"],
        f'members[value eq "{amy["id"]}"]': ["7A"],
        f'members.value eq "{amy["id"]}"': ["7A"],
        f'id eq "{seven_a["id"]}" and members[value eq "{amy["id"]}" and type eq "User"]': ["7A"],
        "members pr": ["7A"],
        "not (members pr)": ["Maths"],
        'externalId eq "g-1"': ["7A"],
    }
    for condition, expected in cases.items():
        found = await provider.ok("GET", "/Groups", filter=condition, excludedAttributes="members")
        assert [group["displayName"] for group in found["Resources"]] == expected, condition
        assert all("members" not in group for group in found["Resources"])


async def test_etags(provider: Provisioning) -> None:
    amy = await provider.create_user("amy.b")
    path, version = f"/Users/{amy['id']}", amy["meta"]["version"]
    assert version == 'W/"1"'
    fresh = await provider.request("GET", path, headers={"If-None-Match": version})
    assert fresh.status_code == 304 and fresh.headers["etag"] == version
    body = {"schemas": [USER], "userName": "amy.b", "userType": "Pupil", "name": {"givenName": "Amy"}}
    changed = await provider.request("PUT", path, body, headers={"If-Match": version})
    assert changed.status_code == 200
    assert changed.headers["etag"] == changed.json()["meta"]["version"] == 'W/"2"'
    renamed = patch_op({"op": "replace", "path": "userName", "value": "x"})
    for method, sent in (("PUT", body), ("PATCH", renamed), ("DELETE", None)):
        stale = await provider.request(method, path, sent, headers={"If-Match": version})
        assert scim_error(stale) == (412, None)
    group = await provider.create_group("7A")
    await provider.patch(
        f"/Groups/{group['id']}", {"op": "add", "path": "members", "value": [{"value": amy["id"]}]}
    )
    stale = await provider.request(
        "DELETE", f"/Groups/{group['id']}", headers={"If-Match": group["meta"]["version"]}
    )
    assert scim_error(stale) == (412, None)
    assert (await provider.request("GET", path, headers={"If-None-Match": version})).status_code == 200


ERRORS: list[tuple[str, str, Any, dict[str, Any], tuple[int, str | None]]] = [
    # method, path, body, query, expected (status, scimType)
    ("GET", "/Users", None, {"filter": 'userName eq "amy'}, (400, "invalidFilter")),
    ("GET", "/Users", None, {"filter": "userName eq"}, (400, "invalidFilter")),
    ("GET", "/Users", None, {"filter": 'userName xx "a"'}, (400, "invalidFilter")),
    ("GET", "/Users", None, {"filter": '(userName eq "a"'}, (400, "invalidFilter")),
    ("GET", "/Users", None, {"filter": 'emails.value eq "a@b.c"'}, (400, "invalidFilter")),
    ("GET", "/Users", None, {"filter": 'active eq "yes"'}, (400, "invalidFilter")),
    ("GET", "/Users", None, {"filter": 'meta.created gt "yesterday"'}, (400, "invalidFilter")),
    ("GET", "/Users", None, {"sortBy": "emails"}, (400, "invalidValue")),
    ("GET", "/Users", None, {"sortOrder": "sideways"}, (400, "invalidValue")),
    ("GET", "/Users", None, {"count": "ten"}, (400, "invalidValue")),
    ("GET", "/Users", None, {"access_token": "rca_x"}, (400, None)),
    ("POST", "/Users", {"schemas": [USER], "userName": "amy.b", "userType": 7}, {}, (400, "invalidValue")),
    (
        "POST",
        "/Users",
        {"schemas": [USER], "userName": "amy b", "userType": "Pupil"},
        {},
        (400, "invalidValue"),
    ),
    ("POST", "/Users", {"schemas": [USER], "userName": "x", "userType": "Guest"}, {}, (400, "invalidValue")),
    (
        "POST",
        "/Users",
        {"schemas": [USER], "userName": "x", "userType": "Pupil", "active": "maybe"},
        {},
        (400, "invalidValue"),
    ),
    (
        "POST",
        "/Users",
        {"schemas": [GROUP], "userName": "x", "userType": "Pupil"},
        {},
        (400, "invalidSyntax"),
    ),
    ("POST", "/Users", [1, 2], {}, (400, "invalidSyntax")),
    (
        "POST",
        "/Users",
        {"schemas": [USER], "userName": "ADMIN", "userType": "Teacher"},
        {},
        (409, "uniqueness"),
    ),
    (
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "7A", CLASS: {"kind": "house"}},
        {},
        (400, "invalidValue"),
    ),
    (
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "7A", "members": [{"value": str(uuid.uuid4())}]},
        {},
        (400, "invalidValue"),
    ),
    (
        "POST",
        "/Groups",
        {"schemas": [GROUP], "displayName": "7A", "members": [{"value": "x", "type": "Group"}]},
        {},
        (400, "invalidValue"),
    ),
    ("GET", f"/Users/{uuid.uuid4()}", None, {}, (404, None)),
    ("GET", "/Users/not-an-id", None, {}, (404, None)),
    ("PATCH", f"/Groups/{uuid.uuid4()}", patch_op({"op": "add", "value": {}}), {}, (404, None)),
    ("GET", "/Me", None, {}, (404, None)),
    ("POST", "/ServiceProviderConfig", {}, {}, (405, None)),
    ("DELETE", "/Schemas", None, {}, (405, None)),
    ("POST", "/.search", {"schemas": [SEARCH_REQUEST]}, {}, (501, None)),
    ("POST", "/Bulk", {}, {}, (501, None)),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "expected"),
    ERRORS,
    ids=[f"{e[0]} {e[1]} {e[3] or ''} {e[4][0]}" for e in ERRORS],
)
async def test_errors_have_the_right_status_and_scim_type(
    provider: Provisioning,
    method: str,
    path: str,
    body: Any,
    query: dict[str, Any],
    expected: tuple[int, str | None],
) -> None:
    response = await provider.request(method, path, body, **query)
    assert response.headers["content-type"] == "application/scim+json"
    assert scim_error(response) == expected


async def test_patch_errors_and_conflicts(provider: Provisioning) -> None:
    amy, ben = await provider.create_user("amy.b", externalId="e-1"), await provider.create_user("ben.c")
    await provider.create_group("7A", "registration")
    maths = await provider.create_group("Maths")

    async def refused(path: str, *operations: Any) -> tuple[int, str | None]:
        return scim_error(await provider.request("PATCH", path, patch_op(*operations)))

    user, group = f"/Users/{ben['id']}", f"/Groups/{maths['id']}"
    assert await refused(user, {"op": "replace", "path": "userName", "value": "AMY.B"}) == (409, "uniqueness")
    assert await refused(user, {"op": "add", "path": "externalId", "value": "e-1"}) == (409, "uniqueness")
    assert await refused(
        group,
        {"op": "replace", "path": f"{CLASS}:kind", "value": "registration"},
        {"op": "replace", "path": "displayName", "value": "7a"},
    ) == (409, "uniqueness")
    assert await refused(user, {"op": "move", "path": "userName", "value": "x"}) == (400, "invalidSyntax")
    assert await refused(user) == (400, "invalidSyntax")
    assert await refused(user, {"op": "remove"}) == (400, "noTarget")
    assert await refused(user, {"op": "replace", "path": "name[x eq", "value": "x"}) == (400, "invalidPath")
    assert await refused(user, {"op": "replace", "path": "id", "value": "x"}) == (400, "mutability")
    assert await refused(user, {"op": "replace", "path": "userType", "value": 7}) == (400, "invalidValue")
    assert await refused(user, {"op": "remove", "path": "userName"}) == (400, "invalidValue")
    assert await refused(
        group, {"op": "replace", "path": f'members[value eq "{amy["id"]}"]', "value": {"value": amy["id"]}}
    ) == (400, "noTarget")
    admin = f"/Users/{provider.school.admin_id}"
    assert await refused(admin, {"op": "replace", "path": "active", "value": False}) == (404, None)
    assert (await provider.request("GET", f"/Users/{ben['id']}")).json()["userName"] == "ben.c"


# Who may use SCIM, and on what


async def test_only_a_provisioning_token_of_a_managed_school_gets_in(
    provider: Provisioning, http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database
) -> None:
    anonymous = await http.get("/scim/v2/Users")
    assert scim_error(anonymous) == (401, None) and anonymous.headers["www-authenticate"].startswith("Bearer")
    unknown = await http.get("/scim/v2/Users", headers={"Authorization": "Bearer rca_not-a-token"})
    assert scim_error(unknown) == (401, None)
    reader = await make_api_token(db, provider.school, [ApiScope.ROSTER_READ])
    for token in (reader, provider.school.admin_token):
        refused = await http.get(
            "/scim/v2/ServiceProviderConfig", headers={"Authorization": f"Bearer {token}"}
        )
        assert scim_error(refused) == (403, None)
    # The school goes back to managing its users by hand: its provider's token stops working.
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, provider.school.id)
        await session.execute(update(School).values(provider=Provider.MANUAL))
    refused = await provider.request("GET", "/Users")
    assert scim_error(refused) == (403, None) and "by hand" in refused.json()["detail"]


async def test_a_token_reaches_only_its_own_school(
    provider: Provisioning, owner_engine: AsyncEngine, db: Database, http: httpx.AsyncClient
) -> None:
    other = Provisioning(
        school := await make_school(owner_engine, db, provider=Provider.GLOW),
        await make_api_token(db, school, [ApiScope.PROVISION]),
        http,
    )
    theirs = await other.create_user("amy.b")
    their_group = await other.create_group("7A")
    mine = await provider.create_user("amy.b")
    assert mine["id"] != theirs["id"]
    for path in (f"/Users/{theirs['id']}", f"/Groups/{their_group['id']}"):
        for method in ("GET", "PUT", "DELETE"):
            assert scim_error(await provider.request(method, path, {"schemas": [USER]})) == (404, None)
    assert await provider.users() == ["amy.b"]
    borrowed = {"schemas": [GROUP], "displayName": "7A", "members": [{"value": theirs["id"]}]}
    assert scim_error(await provider.request("POST", "/Groups", borrowed)) == (400, "invalidValue")


async def test_a_provisioning_token_is_refused_by_every_graphql_field(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    world = World(
        school=provider.school,
        pupil_id=uuid.uuid4(),
        teacher_id=uuid.uuid4(),
        other=provider.school,
        ids=defaultdict(lambda: str(uuid.uuid4())),
    )
    for field, operation in sorted(OPERATIONS.items()):
        query, variables = operation.build(world)
        response = await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {provider.token}"},
        )
        assert response.status_code == 403, (field, response.text)
        assert "only on SCIM" in response.text


def test_reading_the_roster_takes_the_roster_read_scope() -> None:
    def info(*scopes: str) -> Any:
        caller = App(school_id=uuid.uuid4(), token_id=uuid.uuid4(), scopes=frozenset(scopes))
        return SimpleNamespace(context=SimpleNamespace(caller=caller))

    assert CanReadRoster().has_permission(None, info(ApiScope.ROSTER_READ)) is True
    with pytest.raises(GraphQLError) as refused:
        CanReadRoster().has_permission(None, info(ApiScope.PROVISION))
    assert refused.value.extensions == {"code": "FORBIDDEN"}


async def test_graphql_user_management_stays_refused_in_a_managed_school(
    provider: Provisioning, http: httpx.AsyncClient
) -> None:
    add = (
        'mutation { addUser(input: {username: "x", password: "pupil-pass", type: PUPIL}) '
        "{ errors { code } } }"
    )
    body = await graphql(http, add, token=provider.school.admin_token)
    assert body["data"]["addUser"]["errors"] == [{"code": "MANAGED_BY_PROVIDER"}]


# Issuing provisioning tokens


async def test_admins_issue_provisioning_tokens_for_managed_schools_only(
    provider: Provisioning, http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    issued = await graphql(http, CREATE_TOKEN, {"scopes": ["PROVISION"]}, token=provider.school.admin_token)
    created = issued["data"]["createApiToken"]
    assert created["errors"] == [] and created["apiToken"]["scopes"] == ["PROVISION"]
    works = await http.get("/scim/v2/Users", headers={"Authorization": f"Bearer {created['token']}"})
    assert works.status_code == 200
    mixed = await graphql(
        http, CREATE_TOKEN, {"scopes": ["PROVISION", "ROSTER_READ"]}, token=provider.school.admin_token
    )
    assert [e["code"] for e in mixed["data"]["createApiToken"]["errors"]] == ["INVALID_INPUT"]
    manual = await graphql(http, CREATE_TOKEN, {"scopes": ["PROVISION"]}, token=school.admin_token)
    assert manual["data"]["createApiToken"]["token"] is None
    assert "by hand" in manual["data"]["createApiToken"]["errors"][0]["message"]


@pytest.mark.slow
async def test_the_command_line_prints_a_provisioning_token_once(
    migrated: EmbeddedServer,
    owner_engine: AsyncEngine,
    db: Database,
    http: httpx.AsyncClient,
    school: SchoolFixture,
) -> None:
    managed = await make_school(owner_engine, db, provider=Provider.HWB)
    urls = migrated.urls()
    env = {**os.environ, "DATABASE_URL": urls.owner, "APP_DATABASE_URL": urls.app}
    issued = await asyncio.to_thread(rollcall, env, "school", "provisioning-token", "--slug", managed.slug)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("rca_")
    assert (await http.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    async with school_scope(db, managed.id) as session:
        stored = (await session.execute(text("select name, scopes from api_tokens"))).one()
    assert tuple(stored) == ("Provisioning", ["PROVISION"])
    for slug, why in (
        ("no-such-school", "No school has the slug 'no-such-school'."),
        (school.slug, "by hand"),
    ):
        refused = await asyncio.to_thread(rollcall, env, "school", "provisioning-token", "--slug", slug)
        assert refused.returncode == 2 and why in refused.stderr and "Traceback" not in refused.stderr


# Discovery


async def test_discovery_describes_what_rollcall_keeps(provider: Provisioning) -> None:
    config = await provider.ok("GET", "/ServiceProviderConfig")
    assert {key: config[key]["supported"] for key in ("patch", "bulk", "filter", "sort", "etag")} == {
        "patch": True,
        "bulk": False,
        "filter": True,
        "sort": True,
        "etag": True,
    }
    types = await provider.ok("GET", "/ResourceTypes")
    assert [t["endpoint"] for t in types["Resources"]] == ["/Users", "/Groups"]
    schema = await provider.ok("GET", f"/Schemas/{USER}")
    assert [a["name"] for a in schema["attributes"]] == [
        "userName",
        "name",
        "userType",
        "active",
        "password",
        "groups",
    ]
    extension = await provider.ok("GET", f"/Schemas/{CLASS}")
    assert extension["attributes"][0]["canonicalValues"] == ["registration", "teaching"]


# The filter language


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('userName eq "bjensen"', Compare("userName", "eq", "bjensen")),
        (
            'userName Eq "a" OR name.familyName sw "b" and active eq true',
            Logical(
                "or",
                Compare("userName", "eq", "a"),
                Logical("and", Compare("name.familyName", "sw", "b"), Compare("active", "eq", True)),
            ),
        ),
        (
            '(userName eq "a" or userName eq "b") and not (active eq false)',
            Logical(
                "and",
                Logical("or", Compare("userName", "eq", "a"), Compare("userName", "eq", "b")),
                Not(Compare("active", "eq", False)),
            ),
        ),
        (
            'members[value eq "1" and type eq "User"]',
            ValuePath("members", Logical("and", Compare("value", "eq", "1"), Compare("type", "eq", "User"))),
        ),
        ("title pr", Compare("title", "pr")),
        (
            "x ge 1.5 and y lt -2 and z eq null",
            Logical(
                "and",
                Logical("and", Compare("x", "ge", 1.5), Compare("y", "lt", -2)),
                Compare("z", "eq", None),
            ),
        ),
        (r'userName eq "a \"quoted\" name"', Compare("userName", "eq", 'a "quoted" name')),
    ],
)
def test_filters_parse(text: str, parsed: Any) -> None:
    assert parse_filter(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "userName",
        "userName eq",
        'userName like "a"',
        '(userName eq "a"',
        'userName eq "a',
        "userName eq a",
        'userName eq "a" and',
        'eq eq "a"',
        'userName eq "a" userName',
        r'userName eq "\q"',
        'members[value eq "a"',
    ],
)
def test_bad_filters_say_what_is_wrong(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        parse_filter(text)


def test_patch_paths_parse() -> None:
    assert parse_path("name.givenName") == PatchPath("name.givenName")
    assert parse_path('members[value eq "2819c"]') == PatchPath("members", Compare("value", "eq", "2819c"))
    assert parse_path('emails[type eq "work"].value') == PatchPath(
        "emails", Compare("type", "eq", "work"), "value"
    )
    for bad in ('members[value eq "a"]x', "name given", 'members[value eq "a"].'):
        with pytest.raises(FilterSyntaxError):
            parse_path(bad)


async def test_a_user_type_is_mapped_both_ways(provider: Provisioning, db: Database) -> None:
    pupil = (await provider.create_user("made.here"))["id"]
    found = await provider.ok("GET", f"/Users/{pupil}")
    assert (found["userType"], found["active"], "externalId" in found) == ("Pupil", True, False)


# What a provider manages: the users it provisioned, and no one else


async def made_in_rollcall(provider: Provisioning, db: Database) -> dict[str, uuid.UUID]:
    """The admin from the command line, and a teacher and a pupil made in Rollcall, each in a registration
    class of their own."""
    school = provider.school
    made = {
        "admin": school.admin_id,
        "here.teacher": await make_user(db, school, type=UserType.TEACHER, username="here.teacher"),
        "here.pupil": await make_user(db, school, username="here.pupil"),
    }
    for username, user_id in made.items():
        await make_class(db, school, f"Form of {username}", user_id)
    return made


async def test_a_provider_never_sees_users_made_in_rollcall(provider: Provisioning, db: Database) -> None:
    # given the admin and users made in Rollcall, and one user the provider provisioned
    made = await made_in_rollcall(provider, db)
    amy = await provider.create_user("amy.b")

    # then lists, filters and reads by id know only the provider's own user
    assert await provider.users() == ["amy.b"]
    assert (await provider.ok("GET", "/Users"))["totalResults"] == 1
    for username, user_id in made.items():
        assert await provider.users(filter=f'userName eq "{username}"') == []
        assert await provider.users(filter=f'id eq "{user_id}"') == []
        assert scim_error(await provider.request("GET", f"/Users/{user_id}")) == (404, None)
    searched = await provider.ok(
        "POST", "/Users/.search", {"schemas": [SEARCH_REQUEST], "filter": "userName pr"}
    )
    assert [r["id"] for r in searched["Resources"]] == [amy["id"]]


async def test_a_provider_cannot_change_sign_in_as_or_remove_the_admin(
    provider: Provisioning, db: Database, http: httpx.AsyncClient
) -> None:
    # given the admin made with the command line, and users made in Rollcall
    made = await made_in_rollcall(provider, db)
    before = await roster(http, provider.school)

    # when the provider tries every change on each of them
    for user_id in made.values():
        path = f"/Users/{user_id}"
        attempts = [
            await provider.request(
                "PUT",
                path,
                {
                    "schemas": [USER],
                    "userName": "taken.over",
                    "userType": "Teacher",
                    "password": "the-provider-knows-it",
                },
            ),
            await provider.request(
                "PATCH",
                path,
                patch_op({"op": "replace", "path": "password", "value": "the-provider-knows-it"}),
            ),
            await provider.request(
                "PATCH", path, patch_op({"op": "replace", "path": "userName", "value": "taken.over"})
            ),
            await provider.request(
                "PATCH", path, patch_op({"op": "replace", "path": "active", "value": False})
            ),
            await provider.request(
                "PATCH", path, patch_op({"op": "replace", "path": "name.familyName", "value": "Nobody"})
            ),
            await provider.request("DELETE", path),
        ]

        # then each is answered as if the user did not exist
        assert [scim_error(response) for response in attempts] == [(404, None)] * len(attempts)

    # and nothing changed: the admin still signs in with their own password, not the provider's
    assert await roster(http, provider.school) == before
    login = {"s": provider.school.slug, "u": "admin"}
    taken_over = await graphql(http, LOGIN, {**login, "p": "the-provider-knows-it"})
    assert taken_over["data"]["login"]["token"] is None
    assert (await graphql(http, LOGIN, {**login, "p": ADMIN_PASSWORD}))["data"]["login"]["token"]


async def test_a_provider_cannot_take_a_username_or_grant_admin(
    provider: Provisioning, db: Database, owner_engine: AsyncEngine
) -> None:
    # given the admin, a user made in Rollcall and one the provider provisioned
    await made_in_rollcall(provider, db)
    amy = await provider.create_user("amy.b")

    # then no userName of theirs can be created or taken by rename, and the answer says no more than for
    # a clash with one of the provider's own users
    clashes = [
        await provider.request("POST", "/Users", {"schemas": [USER], "userName": name, "userType": "Pupil"})
        for name in ("ADMIN", "here.pupil", "amy.b")
    ]
    clashes.append(
        await provider.request(
            "PATCH", f"/Users/{amy['id']}", patch_op({"op": "replace", "path": "userName", "value": "admin"})
        )
    )
    assert [scim_error(response) for response in clashes] == [(409, "uniqueness")] * 4
    assert [response.json()["detail"] for response in clashes] == [
        "The userName 'ADMIN' is already taken.",
        "The userName 'here.pupil' is already taken.",
        "The userName 'amy.b' is already taken.",
        "The userName 'admin' is already taken.",
    ]

    # and nothing the provider sends makes its user an admin
    for attempt in (
        {"op": "add", "path": "roles", "value": [{"value": "admin"}]},
        {"op": "replace", "value": {"isAdmin": True, "userType": "Teacher"}},
        {"op": "replace", "path": "userType", "value": "Admin"},
    ):
        await provider.request("PATCH", f"/Users/{amy['id']}", patch_op(attempt))
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, provider.school.id)
        admins = (await session.execute(text("select username from users where is_admin"))).scalars().all()
    assert admins == ["admin"]


async def test_a_provisioned_user_made_admin_is_no_longer_the_providers(
    provider: Provisioning, db: Database
) -> None:
    # given a provisioned teacher whom the school made an admin
    tess = await provider.create_user("tess.t", "Teacher")
    async with school_scope(db, provider.school.id) as session:
        await session.execute(text("update users set is_admin = true where id = :id"), {"id": tess["id"]})

    # then the provider can no longer read, change or remove them
    assert await provider.users() == []
    patched = await provider.request(
        "PATCH",
        f"/Users/{tess['id']}",
        patch_op({"op": "replace", "path": "password", "value": "the-provider-knows-it"}),
    )
    assert scim_error(patched) == (404, None)


async def test_a_provider_cannot_move_users_it_does_not_manage_between_classes(
    provider: Provisioning, db: Database, http: httpx.AsyncClient
) -> None:
    # given the admin and users made in Rollcall, each in their own registration class
    made = await made_in_rollcall(provider, db)
    amy = await provider.create_user("amy.b")
    group = await provider.create_group("7A", "registration", (amy["id"],))
    before = await roster(http, provider.school)

    # when the provider tries to add them to its group, which would move them out of their own
    attempts = []
    for user_id in made.values():
        attempts.append(
            await provider.request(
                "PATCH",
                f"/Groups/{group['id']}",
                patch_op({"op": "add", "path": "members", "value": [{"value": str(user_id)}]}),
            )
        )
        attempts.append(
            await provider.request(
                "PUT",
                f"/Groups/{group['id']}",
                {
                    "schemas": [GROUP],
                    "displayName": "7A",
                    "members": [{"value": str(user_id)}],
                    CLASS: {"kind": "registration"},
                },
            )
        )
    assert [scim_error(response) for response in attempts] == [(400, "invalidValue")] * len(attempts)
    filtered = await provider.ok("GET", "/Groups", filter=f'members[value eq "{made["admin"]}"]')
    assert filtered["totalResults"] == 0

    # then everyone made in Rollcall is still where they were
    assert await roster(http, provider.school) == before


CLASSES = "{ classes { id name } }"


async def test_a_provider_never_sees_or_changes_classes_made_in_rollcall(
    provider: Provisioning, db: Database, http: httpx.AsyncClient
) -> None:
    # given the forms of users made in Rollcall, a club made in Rollcall that a provisioned pupil is in, and
    # the provider's own group
    made = await made_in_rollcall(provider, db)
    amy = await provider.create_user("amy.b")
    await make_class(
        db, provider.school, "Chess club", uuid.UUID(amy["id"]), made["here.pupil"], kind=ClassKind.TEACHING
    )
    maths = await provider.create_group("Maths", None, (amy["id"],))
    listed = await graphql(http, CLASSES, token=provider.school.admin_token)
    made_here = {c["name"]: c["id"] for c in listed["data"]["classes"] if c["id"] != maths["id"]}
    assert sorted(made_here) == ["Chess club", "Form of admin", "Form of here.pupil", "Form of here.teacher"]
    before = await roster(http, provider.school)

    # then lists, filters, searches and its users' groups know only the provider's own group
    found = await provider.ok("GET", "/Groups")
    assert (found["totalResults"], [g["id"] for g in found["Resources"]]) == (1, [maths["id"]])
    for condition, expected in {
        'displayName sw "Form of"': [],
        'displayName eq "Chess club"': [],
        f'members[value eq "{made["here.pupil"]}"]': [],
        f'members[value eq "{amy["id"]}"]': [maths["id"]],
    }.items():
        filtered = await provider.ok("GET", "/Groups", filter=condition)
        assert [g["id"] for g in filtered["Resources"]] == expected, condition
    searched = await provider.ok(
        "POST", "/Groups/.search", {"schemas": [SEARCH_REQUEST], "filter": "displayName pr"}
    )
    assert [g["id"] for g in searched["Resources"]] == [maths["id"]]
    assert [g["display"] for g in (await provider.ok("GET", f"/Users/{amy['id']}"))["groups"]] == ["Maths"]
    for class_id in made_here.values():
        assert (await provider.ok("GET", "/Groups", filter=f'id eq "{class_id}"'))["totalResults"] == 0
        assert await provider.users(filter=f'groups[value eq "{class_id}"]') == []

    # and reading, renaming, replacing, emptying or deleting one of them is answered as if it did not exist
    for name, class_id in made_here.items():
        path = f"/Groups/{class_id}"
        attempts = [
            await provider.request("GET", path),
            await provider.request(
                "PUT", path, {"schemas": [GROUP], "displayName": "Taken over", "members": []}
            ),
            await provider.request(
                "PATCH", path, patch_op({"op": "replace", "path": "displayName", "value": "Taken over"})
            ),
            await provider.request("PATCH", path, patch_op({"op": "remove", "path": "members"})),
            await provider.request(
                "PATCH", path, patch_op({"op": "replace", "path": f"{CLASS}:kind", "value": "teaching"})
            ),
            await provider.request("DELETE", path),
        ]
        assert [scim_error(response) for response in attempts] == [(404, None)] * len(attempts), name

    # and every class made in Rollcall, and everyone in it, is as it was
    after = await graphql(http, CLASSES, token=provider.school.admin_token)
    assert {c["name"]: c["id"] for c in after["data"]["classes"] if c["id"] != maths["id"]} == made_here
    assert await roster(http, provider.school) == before


async def test_a_provider_adds_and_removes_only_its_own_users_in_its_own_classes(
    provider: Provisioning, db: Database, http: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    # given a class of the provider's with three of its users: a teacher the school then makes an admin, a
    # pupil the provider deprovisions, and a pupil it still manages
    tess = await provider.create_user("tess.t", "Teacher")
    ben = await provider.create_user("ben.c")
    amy = await provider.create_user("amy.b")
    maths = await provider.create_group("Maths", None, (tess["id"], ben["id"], amy["id"]))
    art = await provider.create_group("Art", None, (ben["id"], amy["id"]))
    async with school_scope(db, provider.school.id) as session:
        await session.execute(text("update users set is_admin = true where id = :id"), {"id": tess["id"]})
    await provider.ok("DELETE", f"/Users/{ben['id']}", status=204)
    path = f"/Groups/{maths['id']}"
    assert [m["value"] for m in (await provider.ok("GET", path))["members"]] == [amy["id"]]

    # when the provider empties its class, with PATCH and with PUT
    emptied = await provider.patch(path, {"op": "remove", "path": "members"})
    assert "members" not in emptied
    await provider.patch(path, {"op": "add", "path": "members", "value": [{"value": amy["id"]}]})
    replaced = await provider.ok("PUT", path, {"schemas": [GROUP], "displayName": "Maths", "members": []})
    assert "members" not in replaced

    # then the members it does not manage are still in it, and cannot be added back or removed by name
    users = await roster(http, provider.school)
    assert users["tess.t"]["teachingClasses"] == [{"name": "Maths"}]
    assert users["ben.c"]["teachingClasses"] == [{"name": "Art"}, {"name": "Maths"}]
    assert users["amy.b"]["teachingClasses"] == [{"name": "Art"}]
    for member in (tess, ben):
        added = await provider.request(
            "PATCH", path, patch_op({"op": "add", "path": "members", "value": [{"value": member["id"]}]})
        )
        assert scim_error(added) == (400, "invalidValue")
        await provider.patch(path, {"op": "remove", "path": f'members[value eq "{member["id"]}"]'})
    turned = await provider.request(
        "PATCH", path, patch_op({"op": "replace", "path": f"{CLASS}:kind", "value": "registration"})
    )
    assert scim_error(turned) == (400, "mutability")

    # and deleting the class the admin still uses is refused with a SCIM error, and changes nothing
    refused = await provider.request("DELETE", path)
    assert scim_error(refused) == (400, "mutability")
    assert "managed in Rollcall itself" in refused.json()["detail"]
    assert (await provider.ok("GET", path))["displayName"] == "Maths"
    assert await roster(http, provider.school) == users

    # while a class whose only other member is a user the provider deleted goes, naming them in its audit event
    await provider.ok("DELETE", f"/Groups/{art['id']}", status=204)
    assert scim_error(await provider.request("GET", f"/Groups/{art['id']}")) == (404, None)
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, provider.school.id)
        targets = (
            await session.execute(
                text("select target_user_ids from audit_events where action = 'class.deleted'")
            )
        ).scalar_one()
    assert sorted(map(str, targets)) == sorted([ben["id"], amy["id"]])


async def test_the_migration_gives_a_provider_the_classes_it_created_before(
    provider: Provisioning, db: Database, owner_engine: AsyncEngine
) -> None:
    # given classes a provider created, and one made here, as they were before Rollcall recorded who
    # provisioned them
    with_external_id = await provider.create_group("7A", "registration", externalId="entra-7a")
    without = await provider.create_group("Maths")
    here = await make_class(db, provider.school, "Form made here")
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, provider.school.id)
        await session.execute(text("update classes set provisioned_at = null"))
    assert (await provider.ok("GET", "/Groups"))["totalResults"] == 0

    # when the migration's backfill runs
    spec = importlib.util.spec_from_file_location(
        "provisioned_classes",
        Path(__file__).parents[1] / "db/migrations/versions/0012_provisioned_classes.py",
    )
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, provider.school.id)
        await session.execute(text(migration.BACKFILL))

    # then the provider knows exactly its own classes again
    found = await provider.ok("GET", "/Groups")
    assert sorted(g["id"] for g in found["Resources"]) == sorted([with_external_id["id"], without["id"]])
    assert scim_error(await provider.request("GET", f"/Groups/{here}")) == (404, None)


async def test_an_email_address_that_is_taken_gets_one_answer_whoever_has_it(
    provider: Provisioning, db: Database, http: httpx.AsyncClient
) -> None:
    # given addresses held by a teacher made in Rollcall (whom the provider cannot see), by one of the
    # provider's teachers, and by one it deactivated; and one of a teacher made in Rollcall, since deleted
    holders = {
        "here@school.example": await make_user(db, provider.school, type=UserType.TEACHER, username="here.t"),
        "gone.here@school.example": await make_user(
            db, provider.school, type=UserType.TEACHER, username="gone.here"
        ),
    }
    async with school_scope(db, provider.school.id) as session:
        for address, user_id in holders.items():
            await session.execute(
                text("update users set email = :e where id = :id"), {"e": address, "id": user_id}
            )
        await session.execute(
            text("update users set deleted_at = now() where id = :id"),
            {"id": holders["gone.here@school.example"]},
        )
    await provider.create_user(
        "tess.t", "Teacher", emails=[{"value": "tess@school.example", "primary": True}]
    )
    paused = await provider.create_user(
        "paused.p", "Teacher", emails=[{"value": "paused@school.example", "primary": True}]
    )
    await provider.patch(f"/Users/{paused['id']}", {"op": "replace", "path": "active", "value": False})
    tom = await provider.create_user("tom.t", "Teacher")
    before = await roster(http, provider.school)

    # when the provider asks for each taken address, in another case, by POST, PATCH and PUT
    answers = []
    for address in ("HERE@school.example", "Tess@school.example", "Paused@school.example"):
        emails = [{"value": address, "type": "work", "primary": True}]
        for response in (
            await provider.request(
                "POST",
                "/Users",
                {"schemas": [USER], "userName": "new.t", "userType": "Teacher", "emails": emails},
            ),
            await provider.request(
                "PATCH", f"/Users/{tom['id']}", patch_op({"op": "replace", "path": "emails", "value": emails})
            ),
            await provider.request(
                "PUT",
                f"/Users/{tom['id']}",
                {"schemas": [USER], "userName": "tom.t", "userType": "Teacher", "emails": emails},
            ),
        ):
            answers.append((response.status_code, response.json()))

    # then every answer is the same 409, naming the address asked for and no one who has it
    assert answers == [
        (
            409,
            {
                "schemas": [ERROR],
                "status": "409",
                "detail": f"The email address '{address}' belongs to another user.",
                "scimType": "uniqueness",
            },
        )
        for address in ("HERE@school.example", "Tess@school.example", "Paused@school.example")
        for _ in range(3)
    ]
    assert await roster(http, provider.school) == before

    # and the deactivated teacher comes back with their address, while a deleted user's address is free
    back = await provider.patch(f"/Users/{paused['id']}", {"op": "replace", "path": "active", "value": True})
    assert back["active"] is True and back["emails"][0]["value"] == "paused@school.example"
    free = [{"value": "gone.here@school.example", "primary": True}]
    assert (await provider.patch(f"/Users/{tom['id']}", {"op": "replace", "path": "emails", "value": free}))[
        "emails"
    ][0]["value"] == "gone.here@school.example"


async def test_the_migration_gives_a_provider_the_users_it_created_before(
    provider: Provisioning, db: Database, owner_engine: AsyncEngine
) -> None:
    # given users a provider created, and one made here, as they were before Rollcall recorded who provisioned
    with_external_id = await provider.create_user("amy.b", externalId="entra-amy")
    without = await provider.create_user("ben.c")
    here = await make_user(db, provider.school, username="here.pupil")
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, provider.school.id)
        await session.execute(text("update users set provisioned_at = null"))

    # when the migration's backfill runs
    spec = importlib.util.spec_from_file_location(
        "provisioned_users", Path(__file__).parents[1] / "db/migrations/versions/0008_provisioned_users.py"
    )
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    async with async_sessionmaker(owner_engine)() as session, session.begin():
        await bind_school(session, provider.school.id)
        await session.execute(text(migration.BACKFILL))

    # then the provider knows exactly its own users again
    assert sorted(await provider.users()) == ["amy.b", "ben.c"]
    assert {with_external_id["id"], without["id"]} == {
        r["id"] for r in (await provider.ok("GET", "/Users"))["Resources"]
    }
    assert scim_error(await provider.request("GET", f"/Users/{here}")) == (404, None)
