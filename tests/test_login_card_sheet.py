"""The printable sheet, `GET /login-cards`, over real HTTP."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from db.engine import Database
from db.models import AuditEvent, UserType
from db.scope import school_scope
from tests.conftest import ADMIN_PASSWORD, SchoolFixture, graphql, make_api_token, make_user, sign_in_as
from tests.qr import make_class, read_qr

LOGIN = """
mutation ($school: String!, $username: String!, $password: String!) {
  login(school: $school, username: $username, password: $password) { errors { code } }
}
"""
LOGIN_WITH_QR = "mutation ($code: String!) { loginWithQr(code: $code) { user { username } errors { code } } }"
SVG = re.compile(r"<svg .*?</svg>", re.DOTALL)


async def sheet(http: httpx.AsyncClient, token: str | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.get("/login-cards", params=params, headers=headers)


def names_on(page: str) -> list[str]:
    return re.findall(r'<p class="name">([^<]*)</p>', page)


async def class_3b(db: Database, school: SchoolFixture) -> dict[str, Any]:
    """3B: tutor Ms Hill, pupils Amy Okafor and Ben Adams; Dan Cole is in 3C."""
    tutor = await make_user(db, school, type=UserType.TEACHER, first_name="Jo", surname="Hill")
    amy = await make_user(db, school, username="amy.o", first_name="Amy", surname="Okafor")
    ben = await make_user(db, school, username="ben.a", first_name="Ben", surname="Adams")
    dan = await make_user(db, school, username="dan.c", first_name="Dan", surname="Cole")
    return {
        "class": await make_class(db, school, "3B", tutor, amy, ben),
        "other_class": await make_class(db, school, "3C", dan),
        "tutor": tutor,
        "amy": amy,
        "ben": ben,
        "dan": dan,
    }


async def test_the_sheet_lists_exactly_the_class_pupils(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    room = await class_3b(db, school)
    tutor = await sign_in_as(db, school, room["tutor"])

    # when
    response = await sheet(http, tutor, classId=str(room["class"]))

    # then
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert "<title>Login cards: 3B</title>" in page
    assert names_on(page) == ["Ben Adams", "Amy Okafor"]
    assert page.count('<article class="card">') == page.count("<svg") == 2
    assert page.count("Class: 3B") == 2
    assert f"School {school.slug}" in page
    # each QR code on the page signs its own pupil in
    for svg, username in zip(SVG.findall(page), ["ben.a", "amy.o"], strict=True):
        body = await graphql(
            http,
            LOGIN_WITH_QR,
            {"code": read_qr(svg)},
            headers={"X-Forwarded-For": f"2001:db8::5:{uuid.uuid4().hex[:4]}"},
        )
        assert body["data"]["loginWithQr"] == {"user": {"username": username}, "errors": []}


async def test_the_sheet_for_selected_pupils(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await class_3b(db, school)

    response = await sheet(http, school.admin_token, userIds=f"{room['dan']}, {room['amy']},{room['tutor']}")

    assert response.status_code == 200
    assert names_on(response.text) == ["Amy Okafor", "Dan Cole"]
    assert "<title>Login cards</title>" in response.text


async def test_the_sheet_works_with_the_session_cookie(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a browser signed in with the session cookie
    room = await class_3b(db, school)
    await http.post(
        "/graphql",
        json={
            "query": LOGIN,
            "variables": {"school": school.slug, "username": "admin", "password": ADMIN_PASSWORD},
        },
    )
    assert "rollcall_session" in http.cookies

    # when it opens the sheet in a tab (a GET: no CSRF header needed)
    response = await http.get("/login-cards", params={"classId": str(room["class"])})
    http.cookies.clear()

    # then
    assert response.status_code == 200
    assert names_on(response.text) == ["Ben Adams", "Amy Okafor"]


async def test_printing_the_sheet_is_audited(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await class_3b(db, school)

    await sheet(http, school.admin_token, classId=str(room["class"]))

    async with school_scope(db, school.id) as session:
        (printed,) = (
            await session.execute(
                select(AuditEvent).where(
                    AuditEvent.school_id == school.id, AuditEvent.action == "login_card.printed"
                )
            )
        ).scalars()
    assert printed.actor_id == school.admin_id
    assert sorted(printed.target_user_ids) == sorted([room["amy"], room["ben"]])
    assert printed.summary == {"via": "sheet", "class_id": str(room["class"])}


async def test_the_sheet_refuses_whoever_may_not_have_it(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await class_3b(db, school)
    other_teacher = await sign_in_as(db, school, await make_user(db, school, type=UserType.TEACHER))
    pupil = await sign_in_as(db, school, room["amy"])
    api_token = await make_api_token(db, school)
    class_id = str(room["class"])

    refusals = {
        "nobody": await sheet(http, classId=class_id),
        "a stale token": await sheet(http, "rcs_not-a-session", classId=class_id),
        "an API token": await sheet(http, api_token, classId=class_id),
        "a pupil": await sheet(http, pupil, classId=class_id),
        "a teacher of other classes": await sheet(http, other_teacher, classId=class_id),
        "a teacher choosing other pupils": await sheet(http, other_teacher, userIds=str(room["amy"])),
    }

    assert {who: said(r) for who, r in refusals.items()} == {
        "nobody": (401, "UNAUTHENTICATED", "Sign in first."),
        "a stale token": (401, "UNAUTHENTICATED", "Sign in first."),
        "an API token": (403, "FORBIDDEN", "An API token cannot print login cards: their codes are secrets."),
        "a pupil": (403, "FORBIDDEN", "Only teachers can print login cards."),
        "a teacher of other classes": (
            403,
            "FORBIDDEN",
            "You can print login cards only for the classes you are in.",
        ),
        "a teacher choosing other pupils": (
            403,
            "FORBIDDEN",
            "You can print login cards only for pupils in the classes you are in.",
        ),
    }
    assert all(r.headers["cache-control"] == "no-store" for r in refusals.values())
    # said as GraphQL errors are, so a GraphQL client shows them like any other
    assert all(r.headers["content-type"].startswith("application/json") for r in refusals.values())


def said(response: httpx.Response) -> tuple[int, str, str]:
    """A refusal's status, and the code and message of its one GraphQL-shaped error."""
    (error,) = response.json()["errors"]
    return response.status_code, error["extensions"]["code"], error["message"]


async def test_the_sheet_says_what_is_wrong_with_a_bad_request(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    admin, missing = school.admin_token, uuid.uuid4()

    answers = [
        await sheet(http, admin),
        await sheet(http, admin, classId=str(missing), userIds=str(missing)),
        await sheet(http, admin, classId="3B"),
        await sheet(http, admin, userIds=f"{missing},nope"),
        await sheet(http, admin, classId=str(missing)),
        await http.get("/login-cards", params={"classId": str(missing), "token": admin}),
    ]

    which = "Say which cards to print: ?classId=<class id> or ?userIds=<id>,<id>,… (not both)."
    assert [said(r) for r in answers] == [
        (400, "BAD_REQUEST", which),
        (400, "BAD_REQUEST", which),
        (400, "BAD_REQUEST", "'3B' is not a class id."),
        (400, "BAD_REQUEST", "'nope' is not a user id."),
        (404, "NOT_FOUND", f"No class has the id {missing}."),
        (400, "BAD_REQUEST", "Send tokens in the Authorization header, never in the URL."),
    ]


async def test_an_empty_selection_prints_a_page_that_says_so(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    empty_class = await make_class(db, school, "Nursery")

    response = await sheet(http, school.admin_token, classId=str(empty_class))

    assert response.status_code == 200
    assert "There are no login cards to print." in response.text
    assert "<svg" not in response.text
