"""The "manage users" screen as the browser drives it, over HTTP with the session cookie and the CSRF header,
counting the GraphQL requests it takes: sign in, the table paged, sorted and searched, an inline edit that
meets a concurrent one, add a pupil, delete three, show deleted, restore two, reset two passwords, open a
registration class and add pupils to it, print cards, download the CSV, change it, upload it, preview,
confirm (it answers at once), follow the progress live (one subscription on the page's WebSocket), take
the generated passwords, sign out.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from db.audit import Actor
from db.classes import create_class
from db.engine import Database
from db.models import ClassKind, UserType
from db.scope import school_scope
from tests.conftest import ADMIN_PASSWORD, graphql, make_school, make_user
from tests.test_live_progress import collect, signed_in, socket

# The most GraphQL requests the whole workflow may take (it took 45 before payloads returned the query root).
MOST_REQUESTS = 31

ROW = (
    "id username firstName surname type isAdmin version deletedAt lastSignInAt "
    "registrationClass { id name } viewerCanEdit viewerCanDelete viewerCanResetPassword "
    "viewerCanPrintLoginCard"
)
TABLE = f"totalCount edges {{ node {{ {ROW} }} }} pageInfo {{ hasNextPage endCursor }}"
# What the screen shows after any change: the counts and the page on screen.
REFRESH = f"query {{ active: users(first: 50) {{ {TABLE} }} classes {{ id name memberCount }} }}"
SCREEN = f"""
query Screen {{
  me {{ id username lastSignInAt }}
  school {{ name passwordPolicy {{ staffMinLength pupilMinLength }} }}
  active: users(first: 50) {{ {TABLE} }}
  deleted: users(filter: {{ status: DELETED }}, first: 1) {{ totalCount }}
  classes {{ id name kind memberCount viewerCanEdit }}
}}
"""
PAGE = f"query ($after: String) {{ users(first: 50, after: $after) {{ {TABLE} }} }}"
SORTED = f"{{ users(first: 50, orderBy: {{ field: USERNAME, descending: true }}) {{ {TABLE} }} }}"
SEARCHED = f'{{ users(first: 50, filter: {{ search: "pupil0" }}) {{ {TABLE} }} }}'
EDIT = f"""
mutation ($id: ID!, $value: String!, $version: Int!) {{
  updateUserField(userId: $id, field: SURNAME, value: $value, expectedVersion: $version) {{
    user {{ {ROW} }} errors {{ code path userId message }} {REFRESH}
  }}
}}
"""
ADD = f"""
mutation {{
  addUser(input: {{ username: "new.pupil", password: "kite", type: PUPIL, surname: "Newton" }}) {{
    user {{ {ROW} }} errors {{ code path message }} {REFRESH}
  }}
}}
"""
DELETE = f"mutation ($ids: [ID!]!) {{ deleteUsers(userIds: $ids) {{ users {{ id deletedAt }} errors {{ code }} {REFRESH} }} }}"
DELETED = f"{{ users(first: 50, filter: {{ status: DELETED }}) {{ totalCount edges {{ node {{ {ROW} deletedBy {{ username }} }} }} }} }}"
RESTORE = f"mutation ($ids: [ID!]!) {{ restoreUsers(userIds: $ids) {{ users {{ id deletedAt }} errors {{ code }} {REFRESH} }} }}"
RESET = """
mutation ($ids: [ID!]!, $current: String!) {
  resetPasswords(userIds: $ids, currentPassword: $current, newPassword: "blue-kite", confirmPassword: "blue-kite") {
    users { id } errors { code path message attemptsRemaining }
  }
}
"""
OPEN_CLASS = """
query ($id: ID!) {
  schoolClass(id: $id) { id name memberCount members(first: 50) { totalCount edges { node { id username } } } }
  pupils: users(first: 50, filter: { type: PUPIL }) { edges { node { id username registrationClass { id } } } }
}
"""
ASSIGN = """
mutation ($id: ID!, $ids: [ID!]!) {
  assignClass(classId: $id, userIds: $ids) {
    users { id version registrationClass { name } }
    affectedClasses { id name memberCount }
    errors { code }
    query { schoolClass(id: $id) { members(first: 50) { totalCount } } }
  }
}
"""
UPLOAD = """
mutation ($file: Upload!) {
  bulkImport(file: $file) {
    job {
      id status totals { create update unchanged error remove restore }
      rows(action: CREATE) { totalCount edges { node { username action values { firstName surname } } } }
    }
    errors { code message }
  }
}
"""
CONFIRM = """
mutation ($id: ID!, $password: String!) {
  confirmImport(jobId: $id, currentPassword: $password) { job { id status } errors { code message } }
}
"""
FOLLOW = (
    "subscription ($id: ID!) { importJobProgress(id: $id) { status processed total finished failureReason } }"
)
TAKE = f"""
mutation ($id: ID!) {{
  takeGeneratedPasswords(jobId: $id) {{
    generatedPasswords {{ username password }} errors {{ code message }} {REFRESH}
  }}
}}
"""
LOGOUT = "mutation { logout { errors { code } } }"


class Browser:
    """A browser tab of the front end: the cookie jar, the CSRF header on every POST, and a count."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http, self.graphql_requests, self.other_requests = http, 0, 0

    async def ask(self, query: str, **variables: Any) -> dict[str, Any]:
        self.graphql_requests += 1
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"X-Rollcall-CSRF": "1", "Accept": "application/graphql-response+json"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    async def upload(self, query: str, content: bytes) -> dict[str, Any]:
        self.graphql_requests += 1
        response = await self.http.post(
            "/graphql",
            data={
                "operations": json.dumps({"query": query, "variables": {"file": None}}),
                "map": json.dumps({"0": ["variables.file"]}),
            },
            files={"0": ("roster.csv", content, "text/csv")},
            headers={"X-Rollcall-CSRF": "1"},
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def follow(self, server_url: str, query: str, **variables: Any) -> list[dict[str, Any]]:
        """A subscription on the page's WebSocket (signed in by the session cookie): what it sent, to the end."""
        self.graphql_requests += 1
        cookie = {"Cookie": f"rollcall_session={self.http.cookies['rollcall_session']}"}
        async with socket(server_url, additional_headers=cookie, origin=server_url) as ws:
            await signed_in(ws)
            sent = await collect(ws, query, variables)
        assert sent[-1]["type"] == "complete", sent
        return [message["payload"]["data"] for message in sent[:-1]]

    async def get(self, path: str, **params: str) -> httpx.Response:
        self.other_requests += 1
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response


async def test_the_manage_users_workflow_in_at_most_31_requests(
    server_url: str, owner_engine: AsyncEngine, db: Database
) -> None:
    school = await make_school(owner_engine, db)
    pupils = [await make_user(db, school, username=f"pupil{i:02}", surname=f"S{i:02}") for i in range(60)]
    await make_user(db, school, type=UserType.TEACHER, username="hill", password="hill-pass-2026")
    async with school_scope(db, school.id) as session:
        form = await create_class(
            session,
            school_id=school.id,
            actor=Actor(id=school.admin_id, label="admin"),
            name="3B",
            kind=ClassKind.REGISTRATION,
        )
    async with (
        httpx.AsyncClient(base_url=server_url, timeout=60) as http,
        httpx.AsyncClient(base_url=server_url, timeout=60) as colleague,
    ):
        tab = Browser(http)

        # sign in: the session is a cookie only, never in the body the page's scripts can read
        login = (
            await tab.ask(
                "mutation ($s: String!, $u: String!, $p: String!) { login(school: $s, username: $u, "
                "password: $p) { token user { id } errors { code } } }",
                s=school.slug,
                u="admin",
                p=ADMIN_PASSWORD,
            )
        )["login"]
        assert login["token"] is None and login["errors"] == [] and "rollcall_session" in http.cookies

        # the whole screen in one request
        screen = await tab.ask(SCREEN)
        assert screen["me"]["lastSignInAt"] is not None
        assert screen["school"]["passwordPolicy"] == {"staffMinLength": 8, "pupilMinLength": 4}
        assert screen["active"]["totalCount"] == 62 and screen["active"]["pageInfo"]["hasNextPage"]
        rows = {edge["node"]["username"]: edge["node"] for edge in screen["active"]["edges"]}
        assert rows["pupil00"]["viewerCanDelete"] and not rows["admin"]["viewerCanDelete"]

        # paged, sorted, searched
        cursor = screen["active"]["pageInfo"]["endCursor"]
        assert len((await tab.ask(PAGE, after=cursor))["users"]["edges"]) == 12
        assert (await tab.ask(SORTED))["users"]["edges"][0]["node"]["username"] == "pupil59"
        assert (await tab.ask(SEARCHED))["users"]["totalCount"] == 10

        # an inline edit meets a colleague's: the conflict returns the row as it is now, the retry goes in
        target = rows["pupil00"]
        changed = await graphql(
            colleague,
            'mutation ($id: ID!) { updateUserField(userId: $id, field: FIRST_NAME, value: "Ann", '
            "expectedVersion: 1) { errors { code } } }",
            {"id": target["id"]},
            token=school.admin_token,
        )
        assert changed["data"]["updateUserField"]["errors"] == []
        conflict = (await tab.ask(EDIT, id=target["id"], value="Smith", version=target["version"]))[
            "updateUserField"
        ]
        assert [(e["code"], e["path"], e["userId"]) for e in conflict["errors"]] == [
            ("VERSION_CONFLICT", ["expectedVersion"], target["id"])
        ]
        assert conflict["user"]["firstName"] == "Ann"
        retried = (await tab.ask(EDIT, id=target["id"], value="Smith", version=conflict["user"]["version"]))[
            "updateUserField"
        ]
        assert retried["errors"] == [] and retried["user"]["surname"] == "Smith"

        # add a pupil: the counts come back with it
        added = (await tab.ask(ADD))["addUser"]
        assert added["errors"] == [] and added["query"]["active"]["totalCount"] == 63

        # delete three, show deleted, restore two
        doomed = [str(pupils[i]) for i in (1, 2, 3)]
        deleted = (await tab.ask(DELETE, ids=doomed))["deleteUsers"]
        assert deleted["errors"] == [] and deleted["query"]["active"]["totalCount"] == 60
        shown = (await tab.ask(DELETED))["users"]
        assert shown["totalCount"] == 3
        assert {edge["node"]["deletedBy"]["username"] for edge in shown["edges"]} == {"admin"}
        restored = (await tab.ask(RESTORE, ids=doomed[:2]))["restoreUsers"]
        assert restored["errors"] == [] and restored["query"]["active"]["totalCount"] == 62

        # reset two passwords, typing one's own password again (a wrong one says what is left)
        reset_ids = [str(pupils[10]), str(pupils[11])]
        wrong = (await tab.ask(RESET, ids=reset_ids, current="not-mine"))["resetPasswords"]
        assert [(e["code"], e["attemptsRemaining"]) for e in wrong["errors"]] == [("REAUTH_FAILED", 4)]
        reset = (await tab.ask(RESET, ids=reset_ids, current=ADMIN_PASSWORD))["resetPasswords"]
        assert [user["id"] for user in reset["users"]] == reset_ids

        # open a registration class and add pupils to it
        opened = await tab.ask(OPEN_CLASS, id=str(form.id))
        assert opened["schoolClass"]["members"]["totalCount"] == 0
        chosen = [str(pupils[i]) for i in (20, 21, 22)]
        assigned = (await tab.ask(ASSIGN, id=str(form.id), ids=chosen))["assignClass"]
        assert [user["id"] for user in assigned["users"]] == chosen
        assert assigned["affectedClasses"] == [{"id": str(form.id), "name": "3B", "memberCount": 3}]
        assert assigned["query"]["schoolClass"]["members"]["totalCount"] == 3

        # print the class's cards (the sheet; it records the printing itself)
        sheet = await tab.get("/login-cards", classId=str(form.id))
        assert sheet.text.count("<svg") == 3

        # download the CSV, change it, upload it, preview, confirm, follow progress, take the passwords
        exported = (await tab.get("/users.csv")).content
        changed_file = (
            exported
            + b"csv.pupil,Cee,Ess,PUPIL,3B,,false,,kite-and-string\r\n"
            + b"csv.other,Dee,Eff,PUPIL,3B,,false,,\r\n"
        )
        preview = (await tab.upload(UPLOAD, changed_file))["bulkImport"]
        assert preview["errors"] == [] and preview["job"]["totals"]["create"] == 2
        assert preview["job"]["rows"]["edges"][0]["node"]["values"] == {"firstName": "Cee", "surname": "Ess"}
        job_id = preview["job"]["id"]
        confirmed = (await tab.ask(CONFIRM, id=job_id, password=ADMIN_PASSWORD))["confirmImport"]
        assert confirmed["errors"] == [] and confirmed["job"]["status"] == "RUNNING"
        progress = [sent["importJobProgress"] for sent in await tab.follow(server_url, FOLLOW, id=job_id)]
        assert progress[-1]["status"] == "SUCCEEDED" and progress[-1]["finished"]
        taken = (await tab.ask(TAKE, id=job_id))["takeGeneratedPasswords"]
        assert taken["errors"] == [] and [g["username"] for g in taken["generatedPasswords"]] == ["csv.other"]
        assert taken["query"]["active"]["totalCount"] == 64

        # sign out
        assert (await tab.ask(LOGOUT))["logout"]["errors"] == []

    print(
        f"\nthe manage-users workflow: {tab.graphql_requests} GraphQL requests, {tab.other_requests} others"
    )
    assert tab.graphql_requests <= MOST_REQUESTS
