"""Who may call what: every query and mutation, and the plain-HTTP and SCIM pages, tried as every kind of
caller.

Adding a field to the schema without a row here fails `test_every_field_has_a_row`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.api_tokens import ApiScope, list_api_tokens
from db.audit import Actor
from db.classes import assign_to_class, create_class
from db.engine import Database
from db.models import ClassKind, Provider, UserType
from db.scope import school_scope
from gql.schema import build_schema
from tests.conftest import SchoolFixture, graphql, make_api_token, make_school, make_user, sign_in_as
from tests.test_live_progress import bearer, codes, collect, refused, signed_in, socket
from tests.test_oneroster import make_client as oneroster_client

ANONYMOUS, PUPIL, TEACHER, ADMIN, API_TOKEN, OTHER_ADMIN = (
    "anonymous",
    "pupil",
    "teacher",
    "admin",
    "api",
    "other",
)
ROLES = (ANONYMOUS, PUPIL, TEACHER, ADMIN, API_TOKEN, OTHER_ADMIN)
EVERYONE = frozenset(ROLES)
PEOPLE = frozenset({PUPIL, TEACHER, ADMIN, OTHER_ADMIN})
STAFF = frozenset({TEACHER, ADMIN, OTHER_ADMIN})
ADMINS = frozenset({ADMIN, OTHER_ADMIN})
ROSTER_READERS = STAFF | {API_TOKEN}
FEED_READERS = ADMINS | {API_TOKEN}


@dataclass(frozen=True)
class World:
    """School A with one caller of each kind, plus an admin of school B."""

    school: SchoolFixture
    pupil_id: uuid.UUID
    teacher_id: uuid.UUID
    other: SchoolFixture
    ids: dict[str, str]


@dataclass(frozen=True)
class Operation:
    allowed: frozenset[str]
    build: Callable[[World], tuple[str, dict[str, Any]]]
    upload: bytes | None = None  # sent as the `file` variable of a multipart request


def op(
    allowed: frozenset[str],
    query: str,
    variables: Callable[[World], dict[str, Any]] | None = None,
    upload: bytes | None = None,
) -> Operation:
    return Operation(allowed, lambda world: (query, variables(world) if variables else {}), upload)


async def send(
    http: httpx.AsyncClient, operation: Operation, world: World, token: str | None
) -> dict[str, Any]:
    query, variables = operation.build(world)
    if operation.upload is None:
        return await graphql(http, query, variables, token=token)
    response = await http.post(
        "/graphql",
        data={
            "operations": json.dumps({"query": query, "variables": {**variables, "file": None}}),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": ("roster.csv", operation.upload, "text/csv")},
        headers={"X-Rollcall-CSRF": "1", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


OPERATIONS: dict[str, Operation] = {
    # queries
    "school": op(PEOPLE, "{ school { id } }"),
    "me": op(EVERYONE, "{ me { id } }"),
    "apiTokens": op(ADMINS, "{ apiTokens { id } }"),
    "users": op(ROSTER_READERS, "{ users { totalCount edges { node { id registrationClass { id } } } } }"),
    "user": op(
        ROSTER_READERS, "query ($id: ID!) { user(id: $id) { id } }", lambda world: {"id": world.ids["pupil"]}
    ),
    "classes": op(ROSTER_READERS, "{ classes { id memberCount members { totalCount } } }"),
    "schoolClass": op(
        ROSTER_READERS,
        "query ($id: ID!) { schoolClass(id: $id) { id } }",
        lambda world: {"id": world.ids["class"]},
    ),
    "auditEvents": op(ADMINS, "{ auditEvents { edges { node { action } } } }"),
    "changes": op(
        FEED_READERS,
        "{ changes { pageInfo { endCursor } edges { node { kind operation user { id email } schoolClass { id } } } } }",
    ),
    "changesCursor": op(FEED_READERS, "{ changesCursor }"),
    "importJob": op(
        ADMINS, "query ($id: ID!) { importJob(id: $id) { id } }", lambda world: {"id": world.ids["nobody"]}
    ),
    "rolloverJob": op(
        ADMINS, "query ($id: ID!) { rolloverJob(id: $id) { id } }", lambda world: {"id": world.ids["nobody"]}
    ),
    "loginCards": op(STAFF, "{ loginCards(userIds: []) { code } }"),
    "node": op(
        PEOPLE | {API_TOKEN},
        "query ($id: ID!) { node(id: $id) { id } }",
        lambda world: {"id": world.ids["class"]},
    ),
    "nodes": op(
        PEOPLE | {API_TOKEN},
        "query ($ids: [ID!]!) { nodes(ids: $ids) { id } }",
        lambda world: {"ids": [world.ids["class"], world.ids["api_token"]]},
    ),
    "loginCardSheet": op(STAFF, "{ loginCardSheet(userIds: []) { cards { code } refused { reason } } }"),
    # mutations
    "bulkImport": op(
        ADMINS,
        "mutation ($file: Upload!) { bulkImport(file: $file) { errors { code } } }",
        upload=b"username\r\n",
    ),
    "confirmImport": op(
        ADMINS,
        'mutation ($id: ID!) { confirmImport(jobId: $id, currentPassword: "wrong") { errors { code } } }',
        lambda world: {"id": world.ids["nobody"]},
    ),
    "takeGeneratedPasswords": op(
        ADMINS,
        "mutation ($id: ID!) { takeGeneratedPasswords(jobId: $id) { errors { code } } }",
        lambda world: {"id": world.ids["nobody"]},
    ),
    "planRollover": op(
        ADMINS, "mutation { planRollover(input: {registrationClasses: []}) { errors { code } } }"
    ),
    "confirmRollover": op(
        ADMINS,
        'mutation ($id: ID!) { confirmRollover(jobId: $id, currentPassword: "wrong") { errors { code } } }',
        lambda world: {"id": world.ids["nobody"]},
    ),
    "revertRollover": op(
        ADMINS,
        'mutation ($id: ID!) { revertRollover(jobId: $id, currentPassword: "wrong") { errors { code } } }',
        lambda world: {"id": world.ids["nobody"]},
    ),
    "addUser": op(
        ADMINS, 'mutation { addUser(input: {username: "n", password: "x", type: PUPIL}) { errors { code } } }'
    ),
    "updateUserField": op(
        ADMINS,
        'mutation ($id: ID!) { updateUserField(userId: $id, field: SURNAME, value: "x", '
        "expectedVersion: 1) { errors { code } } }",
        lambda world: {"id": world.ids["nobody"]},
    ),
    "deleteUsers": op(
        ADMINS,
        "mutation ($id: ID!) { deleteUsers(userIds: [$id]) { errors { code } } }",
        lambda world: {"id": world.ids["nobody"]},
    ),
    "restoreUsers": op(
        ADMINS,
        "mutation ($id: ID!) { restoreUsers(userIds: [$id]) { errors { code } } }",
        lambda world: {"id": world.ids["nobody"]},
    ),
    "resetPasswords": op(
        ADMINS,
        'mutation ($id: ID!) { resetPasswords(userIds: [$id], currentPassword: "wrong", '
        'newPassword: "a", confirmPassword: "a") { errors { code } } }',
        lambda world: {"id": world.ids["pupil"]},
    ),
    "login": op(
        EVERYONE, 'mutation { login(school: "x", username: "y", password: "z") { errors { code } } }'
    ),
    # Without a session, signing out does nothing, and says nothing is wrong.
    "logout": op(EVERYONE, "mutation { logout { errors { code } } }"),
    "recordLoginCardsPrinted": op(
        STAFF,
        "mutation ($ids: [ID!]!) { recordLoginCardsPrinted(userIds: $ids) { errors { code } } }",
        lambda world: {"ids": [world.ids["nobody"]]},
    ),
    "changeMyPassword": op(
        PEOPLE,
        'mutation { changeMyPassword(currentPassword: "wrong", newPassword: "a", '
        'confirmPassword: "a") { errors { code } } }',
    ),
    "createApiToken": op(
        ADMINS, 'mutation { createApiToken(name: "App", scopes: [ROSTER_READ]) { errors { code } } }'
    ),
    "revokeApiToken": op(
        ADMINS,
        "mutation ($id: ID!) { revokeApiToken(id: $id) { errors { code } } }",
        lambda world: {"id": world.ids["api_token"]},
    ),
    "loginWithQr": op(EVERYONE, 'mutation { loginWithQr(code: "x") { errors { code } } }'),
    "rotateLoginCodes": op(
        ADMINS,
        "mutation ($ids: [ID!]!) { rotateLoginCodes(userIds: $ids) { errors { code } } }",
        lambda world: {"ids": [world.ids["pupil"]]},
    ),
    "rotateClassLoginCodes": op(
        ADMINS,
        "mutation ($id: ID!) { rotateClassLoginCodes(classId: $id) { errors { code } } }",
        lambda world: {"id": str(uuid.uuid4())},
    ),
    "createClass": op(ADMINS, 'mutation { createClass(name: "7B", kind: TEACHING) { errors { code } } }'),
    "renameClass": op(
        ADMINS,
        'mutation ($id: ID!) { renameClass(classId: $id, name: "7A") { errors { code } } }',
        lambda world: {"id": world.ids["class"]},
    ),
    "deleteClass": op(
        ADMINS,
        "mutation ($id: ID!) { deleteClass(classId: $id) { errors { code } } }",
        lambda world: {"id": world.ids["doomed_class"]},
    ),
    "assignClass": op(
        ADMINS,
        "mutation ($id: ID!, $users: [ID!]!) { assignClass(classId: $id, "
        "userIds: $users) { errors { code } } }",
        lambda world: {"id": world.ids["class"], "users": [world.ids["pupil"]]},
    ),
    "updateSchoolSettings": op(ADMINS, "mutation { updateSchoolSettings(input: {}) { errors { code } } }"),
    "removeFromClass": op(
        ADMINS,
        "mutation ($id: ID!, $users: [ID!]!) { removeFromClass(classId: $id, "
        "userIds: $users) { errors { code } } }",
        lambda world: {"id": world.ids["class"], "users": [world.ids["pupil"]]},
    ),
}


# Fields of object types that declare who may read them, reached through a root field everyone above may use.
RESTRICTED_FIELDS: dict[str, Operation] = {
    "School.schoolYearEndMonth": op(ADMINS, "{ school { schoolYearEndMonth } }"),
    "School.schoolYearEndDay": op(ADMINS, "{ school { schoolYearEndDay } }"),
    "School.deletedUserRetentionDays": op(ADMINS, "{ school { deletedUserRetentionDays } }"),
    "School.feedRetentionDays": op(ADMINS, "{ school { feedRetentionDays } }"),
    "School.teachersCanResetPupilPasswords": op(STAFF, "{ school { teachersCanResetPupilPasswords } }"),
    "User.email": op(ROSTER_READERS, "{ users { edges { node { email } } } }"),
    "User.lastSignInAt": op(ROSTER_READERS, "{ users { edges { node { lastSignInAt } } } }"),
    "User.deletedBy": op(ROSTER_READERS, "{ users { edges { node { deletedBy { id } } } } }"),
    "SchoolClass.memberCount": op(ROSTER_READERS, "{ classes { memberCount } }"),
    "SchoolClass.members": op(ROSTER_READERS, "{ classes { members { totalCount } } }"),
}


def test_every_field_has_a_row() -> None:
    schema = build_schema()
    fields = set(schema._schema.query_type.fields) | set(schema._schema.mutation_type.fields)  # type: ignore[union-attr]
    assert fields == set(OPERATIONS)
    restricted = {
        f"{name}.{field_name}"
        for name, graphql_type in schema._schema.type_map.items()
        if isinstance(graphql_type, GraphQLObjectType) and name not in {"Query", "Mutation", "Subscription"}
        for field_name, field in graphql_type.fields.items()
        if getattr(field.extensions.get("strawberry-definition"), "permission_classes", None)
    }
    assert restricted == set(RESTRICTED_FIELDS)
    assert set(schema._schema.subscription_type.fields) == set(SUBSCRIPTIONS)  # type: ignore[union-attr]


# Subscriptions, over a WebSocket: nobody is refused at connection_init (4403), the rest by the field.
SUBSCRIPTIONS: dict[str, Operation] = {
    "importJobProgress": op(
        ADMINS,
        "subscription ($id: ID!) { importJobProgress(id: $id) { status } }",
        lambda world: {"id": world.ids["nobody"]},
    ),
    "rolloverJobProgress": op(
        ADMINS,
        "subscription ($id: ID!) { rolloverJobProgress(id: $id) { status } }",
        lambda world: {"id": world.ids["nobody"]},
    ),
}


@pytest.mark.parametrize("field", sorted(SUBSCRIPTIONS))
@pytest.mark.parametrize("role", ROLES)
async def test_who_may_subscribe(server_url: str, db: Database, world: World, field: str, role: str) -> None:
    token = await token_for(role, world, db)
    query, variables = SUBSCRIPTIONS[field].build(world)
    async with socket(server_url, bearer(token) if token else {}) as ws:
        if role == ANONYMOUS:
            assert await refused(ws) == 4403
            return
        await signed_in(ws)
        found = codes((await collect(ws, query, variables))[0])
    if role in SUBSCRIPTIONS[field].allowed:
        assert found == ["NOT_FOUND"]  # let through, to an id that is not there
    else:
        assert found == ["FORBIDDEN"]


@pytest.fixture(scope="module")
async def world(owner_engine: AsyncEngine, db: Database) -> World:
    school, other = await make_school(owner_engine, db), await make_school(owner_engine, db)
    pupil = await make_user(db, school, type=UserType.PUPIL)
    teacher = await make_user(db, school, type=UserType.TEACHER)
    await make_api_token(db, school)
    async with school_scope(db, school.id) as session:
        token_id = str((await list_api_tokens(session, school_id=school.id))[0].id)
        actor = Actor(id=school.admin_id, label="admin")
        school_class, doomed_class = [
            await create_class(
                session, school_id=school.id, actor=actor, name=name, kind=ClassKind.REGISTRATION
            )
            for name in ("7A", "7Z")
        ]
    return World(
        school=school,
        pupil_id=pupil,
        teacher_id=teacher,
        other=other,
        ids={
            "api_token": token_id,
            "pupil": str(pupil),
            "class": str(school_class.id),
            "doomed_class": str(doomed_class.id),
            "nobody": str(uuid.uuid4()),
        },
    )


async def token_for(role: str, world: World, db: Database) -> str | None:
    match role:
        case "anonymous":
            return None
        case "pupil":
            return await sign_in_as(db, world.school, world.pupil_id)
        case "teacher":
            return await sign_in_as(db, world.school, world.teacher_id)
        case "admin":
            return await sign_in_as(db, world.school, world.school.admin_id)
        case "api":
            return await make_api_token(db, world.school)
        case "other":
            return await sign_in_as(db, world.other, world.other.admin_id)
    raise AssertionError(role)


@pytest.mark.parametrize("field", sorted(OPERATIONS) + sorted(RESTRICTED_FIELDS))
@pytest.mark.parametrize("role", ROLES)
async def test_who_is_let_through(
    http: httpx.AsyncClient, db: Database, world: World, field: str, role: str
) -> None:
    operation = OPERATIONS.get(field) or RESTRICTED_FIELDS[field]
    body = await send(http, operation, world, await token_for(role, world, db))
    codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
    if role in operation.allowed:
        assert not {"UNAUTHENTICATED", "FORBIDDEN"} & set(codes), body
        # Fields that look one thing up by id answer null for an id they cannot see.
        (answer,) = body["data"].values()
        assert answer is not None or field in {
            "me",
            "user",
            "schoolClass",
            "importJob",
            "rolloverJob",
            "node",
        }, body
    else:
        assert codes == ["UNAUTHENTICATED" if role == ANONYMOUS else "FORBIDDEN"], body


# resetPasswords for teachers: allowed only when the school says so, and only for their classes' pupils.
RESET_AS_TEACHER = (
    'mutation ($ids: [ID!]!) { resetPasswords(userIds: $ids, currentPassword: "wrong", '
    'newPassword: "a", confirmPassword: "a") { errors { code } } }'
)
TEACHER_RESETS = [
    # the school allows it, whose passwords, allowed
    (False, ("own_pupil",), False),
    (True, ("own_pupil",), True),
    (True, ("own_pupil", "other_pupil"), False),
    (True, ("own_pupil", "colleague"), False),
    (True, ("nobody",), False),
]


@pytest.mark.parametrize(("allowed_by_school", "targets", "allowed"), TEACHER_RESETS)
async def test_who_a_teacher_may_reset(
    http: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    db: Database,
    allowed_by_school: bool,
    targets: tuple[str, ...],
    allowed: bool,
) -> None:
    school = await make_school(owner_engine, db)
    teacher = await make_user(db, school, type=UserType.TEACHER)
    ids = {
        "own_pupil": await make_user(db, school),
        "other_pupil": await make_user(db, school),
        "colleague": await make_user(db, school, type=UserType.TEACHER),
        "nobody": uuid.uuid4(),
    }
    async with school_scope(db, school.id) as session:
        actor = Actor(id=school.admin_id, label="admin")
        own = await create_class(
            session, school_id=school.id, actor=actor, name="3B", kind=ClassKind.REGISTRATION
        )
        await assign_to_class(
            session,
            school_id=school.id,
            actor=actor,
            class_id=own.id,
            user_ids=[teacher, ids["own_pupil"], ids["colleague"]],
        )
        await session.execute(
            text("update schools set teachers_can_reset_pupil_passwords = :on"), {"on": allowed_by_school}
        )
    body = await graphql(
        http,
        RESET_AS_TEACHER,
        {"ids": [str(ids[target]) for target in targets]},
        token=await sign_in_as(db, school, teacher),
    )
    codes = [error.get("extensions", {}).get("code") for error in body.get("errors", [])]
    assert codes == ([] if allowed else ["FORBIDDEN"]), body


# The plain-HTTP pages and SCIM, tried as every kind of caller: the status each gets.
PROVISIONING, MANAGED_API, ONEROSTER_APP = "provisioning", "managed-api", "oneroster-app"
# A provider's school has read-only tokens too: only the scope, not the school, keeps them out of SCIM. A
# OneRoster app holds an OAuth access token, exchanged for its API token at /oauth/token.
HTTP_ROLES = (*ROLES, PROVISIONING, MANAGED_API, ONEROSTER_APP)


@dataclass(frozen=True)
class Pages:
    """The world above, plus a class its teacher, its pupil and a new pupil are in (so only the policy keeps
    the pupil from the class's cards), and a managed school's tokens."""

    world: World
    class_id: str
    pupil_id: str
    pupil_username: str
    provider_token: str
    managed_api_token: str
    access_token: str


@pytest.fixture(scope="module")
async def pages(world: World, owner_engine: AsyncEngine, db: Database, server_url: str) -> Pages:
    username = f"p{uuid.uuid4().hex[:10]}"
    pupil = await make_user(db, world.school, username=username)
    async with school_scope(db, world.school.id) as session:
        actor = Actor(id=world.school.admin_id, label="admin")
        room = await create_class(
            session, school_id=world.school.id, actor=actor, name="Maths 8", kind=ClassKind.TEACHING
        )
        await assign_to_class(
            session,
            school_id=world.school.id,
            actor=actor,
            class_id=room.id,
            user_ids=[world.teacher_id, world.pupil_id, pupil],
        )
    managed = await make_school(owner_engine, db, provider=Provider.C2K)
    client_id, secret = await oneroster_client(db, world.school)
    async with httpx.AsyncClient(base_url=server_url) as http:
        exchanged = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        )
    return Pages(
        world=world,
        class_id=str(room.id),
        pupil_id=str(pupil),
        pupil_username=username,
        provider_token=await make_api_token(db, managed, [ApiScope.PROVISION]),
        managed_api_token=await make_api_token(db, managed, [ApiScope.ROSTER_READ]),
        access_token=exchanged.json()["access_token"],
    )


def statuses(default: int, **by_role: int) -> dict[str, int]:
    return {role: by_role.get(role, default) for role in HTTP_ROLES}


SCIM_STATUSES = statuses(403, anonymous=401, provisioning=200)
ONEROSTER_STATUSES = statuses(403, anonymous=401, **{ONEROSTER_APP: 200})
ONEROSTER = "/ims/oneroster/rostering/v1p2"
PAGES: dict[str, tuple[Callable[[Pages], str], dict[str, int]]] = {
    "users.csv": (lambda pages: "/users.csv", statuses(403, anonymous=401, admin=200, other=200)),
    "login-cards by class": (
        lambda pages: f"/login-cards?classId={pages.class_id}",
        statuses(403, anonymous=401, teacher=200, admin=200, other=404),
    ),
    "login-cards by users": (
        lambda pages: f"/login-cards?userIds={pages.pupil_id}",
        statuses(403, anonymous=401, teacher=200, admin=200, other=200),
    ),
    "scim Users": (lambda pages: "/scim/v2/Users", SCIM_STATUSES),
    "scim Groups": (lambda pages: "/scim/v2/Groups", SCIM_STATUSES),
    "scim ServiceProviderConfig": (lambda pages: "/scim/v2/ServiceProviderConfig", SCIM_STATUSES),
    "oneroster users": (lambda pages: f"{ONEROSTER}/users?limit=10000", ONEROSTER_STATUSES),
    "oneroster class students": (
        lambda pages: f"{ONEROSTER}/classes/{pages.class_id}/students",
        ONEROSTER_STATUSES,
    ),
    "oneroster student": (lambda pages: f"{ONEROSTER}/students/{pages.pupil_id}", ONEROSTER_STATUSES),
}


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("role", HTTP_ROLES)
async def test_who_gets_each_page(
    http: httpx.AsyncClient, db: Database, pages: Pages, page: str, role: str
) -> None:
    path, expected = PAGES[page]
    tokens = {
        PROVISIONING: pages.provider_token,
        MANAGED_API: pages.managed_api_token,
        ONEROSTER_APP: pages.access_token,
    }
    token = tokens[role] if role in tokens else await token_for(role, pages.world, db)
    response = await http.get(path(pages), headers={"Authorization": f"Bearer {token}"} if token else {})
    assert response.status_code == expected[role], response.text
    if not page.startswith("scim"):
        # Only a caller of the pupil's own school sees them; another school's admin gets their own school.
        shown = expected[role] == 200 and role != OTHER_ADMIN
        assert (pages.pupil_username in response.text) == shown, response.text
