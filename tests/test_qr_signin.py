"""QR login cards over real HTTP: `loginCards`, `loginWithQr`, rotation, expiry, refusals and throttling."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import Database
from db.login_cards.codes import LoginCode, default_expiry, encode_login_code
from db.models import AuditEvent, ClassKind, Provider, UserType
from db.scope import school_scope
from tests.conftest import (
    SchoolFixture,
    graphql,
    make_api_token,
    make_school,
    make_user,
    sign_in_as,
)
from tests.qr import make_class, read_qr
from web.settings import Settings

LOGIN_CARDS = """
query ($classId: ID, $userIds: [ID!]) {
  loginCards(classId: $classId, userIds: $userIds) {
    user { id username registrationClass { name } } code qrSvg expiresAt
  }
}
"""
LOGIN_WITH_QR = """
mutation ($code: String!) {
  loginWithQr(code: $code) { token user { id username type } errors { code message field } }
}
"""
LOGIN = """
mutation ($school: String!, $username: String!, $password: String!) {
  login(school: $school, username: $username, password: $password) {
    token user { id username type } errors { code message field }
  }
}
"""
ROTATE = """
mutation ($ids: [ID!]!) {
  rotateLoginCodes(userIds: $ids) { users { id version } errors { code message field userId } }
}
"""
ROTATE_CLASS = """
mutation ($id: ID!) { rotateClassLoginCodes(classId: $id) { users { id } errors { code message field } } }
"""
ME = "{ me { id username } }"
DELETE_USERS = "mutation ($ids: [ID!]!) { deleteUsers(userIds: $ids) { errors { code } } }"
RESTORE_USERS = "mutation ($ids: [ID!]!) { restoreUsers(userIds: $ids) { errors { code } } }"
WRONG = {
    "token": None,
    "user": None,
    "errors": [
        {
            "code": "INVALID_CREDENTIALS",
            "message": "That school, username and password do not match an account.",
            "field": None,
        }
    ],
}


def new_client() -> str:
    """A client address of its own (the test server trusts X-Forwarded-For from loopback), so the
    per-client sign-in throttle of one test never touches another."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


async def login_cards(http: httpx.AsyncClient, token: str, **variables: Any) -> list[dict[str, Any]]:
    body = await graphql(http, LOGIN_CARDS, variables, token=token)
    assert "errors" not in body, body
    cards: list[dict[str, Any]] = body["data"]["loginCards"]
    return cards


async def login_cards_error(http: httpx.AsyncClient, token: str, **variables: Any) -> tuple[str, str]:
    body = await graphql(http, LOGIN_CARDS, variables, token=token)
    (error,) = body["errors"]
    return error["extensions"]["code"], error["message"]


async def card_code(http: httpx.AsyncClient, school: SchoolFixture, user_id: uuid.UUID) -> str:
    (card,) = await login_cards(http, school.admin_token, userIds=[str(user_id)])
    code: str = card["code"]
    return code


async def login_with_qr(http: httpx.AsyncClient, code: str, client: str) -> dict[str, Any]:
    body = await graphql(http, LOGIN_WITH_QR, {"code": code}, headers={"X-Forwarded-For": client})
    payload: dict[str, Any] = body["data"]["loginWithQr"]
    return payload


async def audit_events(db: Database, school: SchoolFixture, action: str) -> list[AuditEvent]:
    async with school_scope(db, school.id) as session:
        return list(
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.school_id == school.id, AuditEvent.action == action)
                    .order_by(AuditEvent.created_at)
                )
            ).scalars()
        )


async def school_sql(db: Database, school: SchoolFixture, statement: str, **params: Any) -> None:
    async with school_scope(db, school.id) as session:
        await session.execute(text(statement), params)


@dataclass(frozen=True)
class Classroom:
    """Class 3B: form tutor Ms Hill and pupils Amy and Ben (and Cal, deleted); Dan in 3C; Maths, a teaching
    class of Amy and Dan taught by Mr Park."""

    registration: uuid.UUID
    other_registration: uuid.UUID
    maths: uuid.UUID
    tutor: uuid.UUID
    maths_teacher: uuid.UUID
    amy: uuid.UUID
    ben: uuid.UUID
    cal: uuid.UUID
    dan: uuid.UUID


async def classroom(db: Database, school: SchoolFixture) -> Classroom:
    tutor = await make_user(db, school, type=UserType.TEACHER, username="hill", surname="Hill")
    maths_teacher = await make_user(db, school, type=UserType.TEACHER, username="park", surname="Park")
    amy = await make_user(db, school, username="amy.o", first_name="Amy", surname="Okafor")
    ben = await make_user(db, school, username="ben.a", first_name="Ben", surname="Adams")
    cal = await make_user(db, school, username="cal.b", first_name="Cal", surname="Brown")
    dan = await make_user(db, school, username="dan.c", first_name="Dan", surname="Cole")
    registration = await make_class(db, school, "3B", tutor, amy, ben, cal)
    other_registration = await make_class(db, school, "3C", dan)
    maths = await make_class(db, school, "Maths 3", maths_teacher, amy, dan, kind=ClassKind.TEACHING)
    await school_sql(db, school, "update users set deleted_at = now() where id = :id", id=cal)
    return Classroom(
        registration=registration,
        other_registration=other_registration,
        maths=maths,
        tutor=tutor,
        maths_teacher=maths_teacher,
        amy=amy,
        ben=ben,
        cal=cal,
        dan=dan,
    )


async def test_a_qr_drawn_by_the_server_signs_the_pupil_in(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a card, printed and read by a webcam
    amy = await make_user(db, school, username="amy.o", first_name="Amy", surname="Okafor")
    class_id = await make_class(db, school, "3B", amy)
    (card,) = await login_cards(http, school.admin_token, classId=str(class_id))
    code = read_qr(card["qrSvg"])

    # when
    response = await http.post(
        "/graphql",
        json={"query": LOGIN_WITH_QR, "variables": {"code": code}},
        headers={"X-Forwarded-For": new_client()},
    )
    http.cookies.clear()

    # then the pupil is signed in exactly as `login` would sign them in
    assert code == card["code"]
    payload = response.json()["data"]["loginWithQr"]
    assert payload["errors"] == []
    assert payload["user"] == {"id": str(amy), "username": "amy.o", "type": "PUPIL"}
    cookie = response.headers["set-cookie"]
    assert "rollcall_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    me = await graphql(http, ME, token=payload["token"])
    assert me["data"]["me"] == {"id": str(amy), "username": "amy.o"}
    (signed_in,) = await audit_events(db, school, "user.signed_in")
    assert (signed_in.actor_id, signed_in.target_user_ids) == (amy, [amy])
    assert signed_in.summary == {"method": "qr"}


async def test_the_code_is_reprinted_the_same_and_a_qr_code_per_card(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await classroom(db, school)

    first = await login_cards(http, school.admin_token, classId=str(room.registration))
    again = await login_cards(http, school.admin_token, classId=str(room.registration))

    assert [card["code"] for card in first] == [card["code"] for card in again]
    assert [read_qr(card["qrSvg"]) for card in first] == [card["code"] for card in first]
    assert all(card["qrSvg"].startswith("<svg ") for card in first)


async def test_every_wrong_code_gets_the_answer_of_a_wrong_password(
    http: httpx.AsyncClient,
    db: Database,
    school: SchoolFixture,
    owner_engine: AsyncEngine,
    settings: Settings,
) -> None:
    # given
    secret, client = settings.login_code_secret, new_client()
    expires = default_expiry(datetime.now(UTC).date())

    def craft(
        school_id: uuid.UUID,
        user_id: uuid.UUID,
        *,
        expires_at: datetime = expires,
        signed_with: bytes = secret,
    ) -> str:
        code = LoginCode(school_id=school_id, user_id=user_id, version=1, expires_at=expires_at)
        return encode_login_code(code, secret=signed_with)

    rotated, deleted, amy = [await make_user(db, school) for _ in range(3)]
    teacher = await make_user(db, school, type=UserType.TEACHER)
    rotated_code, deleted_code, amy_code = [await card_code(http, school, u) for u in (rotated, deleted, amy)]
    assert (await graphql(http, ROTATE, {"ids": [str(rotated)]}, token=school.admin_token))["data"][
        "rotateLoginCodes"
    ]["errors"] == []
    await school_sql(db, school, "update users set deleted_at = now() where id = :id", id=deleted)
    other = await make_school(owner_engine, db)
    other_pupil = await make_user(db, other)
    switched_off = await make_school(owner_engine, db)
    switched_off_code = await card_code(http, switched_off, await make_user(db, switched_off))
    await school_sql(db, switched_off, "update schools set qr_sign_in_enabled = false")
    last = "A" if amy_code[-1] != "A" else "B"
    yesterday = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    wrong = {
        "rotated": rotated_code,
        "expired": craft(school.id, amy, expires_at=yesterday),
        "deleted user": deleted_code,
        "teacher": craft(school.id, teacher),
        "admin": craft(school.id, school.admin_id),
        "another school's pupil": craft(school.id, other_pupil),
        "another installation": craft(other.id, other_pupil, signed_with=bytes(32)),
        "tampered": amy_code[:-1] + last,
        "QR sign-in switched off": switched_off_code,
        "not a code": "let me in",
    }
    wrong_password = (
        await graphql(http, LOGIN, {"school": school.slug, "username": "admin", "password": "not-it"})
    )["data"]["login"]

    # when
    answers = {kind: await login_with_qr(http, code, client) for kind, code in wrong.items()}

    # then
    assert wrong_password == WRONG
    assert answers == {kind: WRONG for kind in wrong}
    assert (await login_with_qr(http, amy_code, client))["errors"] == []
    assert (await login_with_qr(http, craft(other.id, other_pupil), client))["errors"] == []
    await school_sql(db, switched_off, "update schools set qr_sign_in_enabled = true")
    assert (await login_with_qr(http, switched_off_code, client))["errors"] == []


async def test_rotating_stops_old_cards_at_once_and_new_cards_work(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    amy, ben = await make_user(db, school), await make_user(db, school)
    old_amy, old_ben = await card_code(http, school, amy), await card_code(http, school, ben)

    # when
    body = await graphql(http, ROTATE, {"ids": [str(amy), str(amy)]}, token=school.admin_token)

    # then
    assert body["data"]["rotateLoginCodes"] == {"users": [{"id": str(amy), "version": 1}], "errors": []}
    client = new_client()
    assert await login_with_qr(http, old_amy, client) == WRONG
    new_amy = await card_code(http, school, amy)
    assert new_amy != old_amy
    assert (await login_with_qr(http, new_amy, client))["user"]["id"] == str(amy)
    assert (await login_with_qr(http, old_ben, client))["user"]["id"] == str(ben)
    (rotated,) = await audit_events(db, school, "login_code.rotated")
    assert (rotated.actor_id, rotated.target_user_ids) == (school.admin_id, [amy])


async def test_a_card_printed_before_a_delete_does_not_work_after_restore(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a card printed, then lost, before the pupil was deleted
    amy = await make_user(db, school)
    lost = await card_code(http, school, amy)
    deleted = await graphql(http, DELETE_USERS, {"ids": [str(amy)]}, token=school.admin_token)
    assert deleted["data"]["deleteUsers"]["errors"] == []

    # when the pupil is restored
    restored = await graphql(http, RESTORE_USERS, {"ids": [str(amy)]}, token=school.admin_token)

    # then the lost card stays useless, and a new one works
    assert restored["data"]["restoreUsers"]["errors"] == []
    client = new_client()
    assert await login_with_qr(http, lost, client) == WRONG
    assert (await login_with_qr(http, await card_code(http, school, amy), client))["user"]["id"] == str(amy)
    (rotated,) = await audit_events(db, school, "login_code.rotated")
    assert (rotated.actor_id, rotated.target_user_ids) == (school.admin_id, [amy])


async def test_rotating_ends_the_sessions_cards_opened_and_no_others(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a pupil signed in on a tablet with their card, and on a laptop with their password
    amy = await make_user(db, school, username="amy.o", password="sun")
    client = new_client()
    by_card = (await login_with_qr(http, await card_code(http, school, amy), client))["token"]
    by_password = (
        await graphql(
            http,
            LOGIN,
            {"school": school.slug, "username": "amy.o", "password": "sun"},
            headers={"X-Forwarded-For": client},
        )
    )["data"]["login"]["token"]
    ben = await make_user(db, school)
    ben_by_card = (await login_with_qr(http, await card_code(http, school, ben), client))["token"]
    assert by_card and by_password and ben_by_card

    # when Amy's codes are rotated
    body = await graphql(http, ROTATE, {"ids": [str(amy)]}, token=school.admin_token)

    # then the card's session ends; her password session and Ben's card session go on
    assert body["data"]["rotateLoginCodes"]["errors"] == []
    assert (await graphql(http, ME, token=by_card))["data"]["me"] is None
    assert (await graphql(http, ME, token=by_password))["data"]["me"]["id"] == str(amy)
    assert (await graphql(http, ME, token=ben_by_card))["data"]["me"]["id"] == str(ben)


async def test_rotating_a_class_ends_its_pupils_card_sessions(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await classroom(db, school)
    by_card = (await login_with_qr(http, await card_code(http, school, room.amy), new_client()))["token"]

    body = await graphql(http, ROTATE_CLASS, {"id": str(room.registration)}, token=school.admin_token)

    assert body["data"]["rotateClassLoginCodes"]["errors"] == []
    assert (await graphql(http, ME, token=by_card))["data"]["me"] is None


async def test_rotating_a_class_rotates_its_pupils_only(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    room = await classroom(db, school)
    old = {user: await card_code(http, school, user) for user in (room.amy, room.ben, room.dan)}

    # when
    body = await graphql(http, ROTATE_CLASS, {"id": str(room.registration)}, token=school.admin_token)

    # then the pupils of 3B, the deleted one too, and not their teacher
    payload = body["data"]["rotateClassLoginCodes"]
    assert payload["errors"] == []
    assert {user["id"] for user in payload["users"]} == {str(room.amy), str(room.ben), str(room.cal)}
    client = new_client()
    assert await login_with_qr(http, old[room.amy], client) == WRONG
    assert await login_with_qr(http, old[room.ben], client) == WRONG
    assert (await login_with_qr(http, old[room.dan], client))["errors"] == []
    (rotated,) = await audit_events(db, school, "login_code.rotated")
    assert sorted(rotated.target_user_ids) == sorted([room.amy, room.ben, room.cal])
    assert rotated.summary == {"class_id": str(room.registration), "class_name": "3B"}


async def test_rotation_reports_every_wrong_id_and_changes_nothing(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given
    amy = await make_user(db, school)
    teacher = await make_user(db, school, type=UserType.TEACHER, username="mr.t")
    unknown = uuid.uuid4()
    code = await card_code(http, school, amy)

    # when
    ids = [str(amy), str(teacher), str(unknown)]
    body = await graphql(http, ROTATE, {"ids": ids}, token=school.admin_token)
    empty = await graphql(http, ROTATE, {"ids": []}, token=school.admin_token)
    no_class = await graphql(http, ROTATE_CLASS, {"id": str(unknown)}, token=school.admin_token)

    # then
    payload = body["data"]["rotateLoginCodes"]
    assert payload["users"] == []
    assert sorted((e["code"], e["userId"], e["field"]) for e in payload["errors"]) == sorted(
        [("INVALID_INPUT", str(teacher), "userIds"), ("NOT_FOUND", str(unknown), "userIds")]
    )
    assert "mr.t is a teacher; only pupils have login cards." in [e["message"] for e in payload["errors"]]
    assert [e["code"] for e in empty["data"]["rotateLoginCodes"]["errors"]] == ["INVALID_INPUT"]
    assert no_class["data"]["rotateClassLoginCodes"]["errors"] == [
        {"code": "NOT_FOUND", "message": f"No class has the id {unknown}.", "field": "classId"}
    ]
    assert (await login_with_qr(http, code, new_client()))["errors"] == []
    assert await audit_events(db, school, "login_code.rotated") == []


async def test_rotation_is_allowed_in_a_managed_school(
    http: httpx.AsyncClient, db: Database, owner_engine: AsyncEngine
) -> None:
    school = await make_school(owner_engine, db, provider=Provider.C2K)
    pupil = await make_user(db, school)

    body = await graphql(http, ROTATE, {"ids": [str(pupil)]}, token=school.admin_token)

    assert body["data"]["rotateLoginCodes"]["errors"] == []


async def test_cards_expire_at_the_end_of_the_schools_year(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school)
    (card,) = await login_cards(http, school.admin_token, userIds=[str(pupil)])
    today = datetime.now(UTC).date()
    assert datetime.fromisoformat(card["expiresAt"]) == default_expiry(today)

    await school_sql(db, school, "update schools set school_year_end_month = 7, school_year_end_day = 20")
    (card,) = await login_cards(http, school.admin_token, userIds=[str(pupil)])

    assert datetime.fromisoformat(card["expiresAt"]) == default_expiry(today, school_year_ends=(7, 20))
    with pytest.raises(IntegrityError, match="ck_schools_school_year_ends"):
        await school_sql(db, school, "update schools set school_year_end_month = 2, school_year_end_day = 30")


async def test_bad_codes_are_throttled_per_client(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a client that has sent ten wrong codes
    client = new_client()
    aliased = (
        "mutation {"
        + " ".join(f'a{i}: loginWithQr(code: "RC1NOTACODE{i}") {{ errors {{ code }} }}' for i in range(15))
        + "}"
    )
    body = await graphql(http, aliased, headers={"X-Forwarded-For": client})
    codes = [payload["errors"][0]["code"] for payload in body["data"].values()]
    assert codes == ["INVALID_CREDENTIALS"] * 10 + ["RATE_LIMITED"] * 5

    # then its pupils' real cards still work (a classroom shares one address); other clients are untouched
    pupil = await make_user(db, school)
    assert (await login_with_qr(http, await card_code(http, school, pupil), client))["errors"] == []
    assert await login_with_qr(http, "RC1NOTACODE", new_client()) == WRONG


async def test_a_rotated_card_does_not_lock_its_pupil_out(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a pupil's old card, scanned fifteen times from several places and from the pupil's own classroom
    pupil = await make_user(db, school)
    old = await card_code(http, school, pupil)
    await graphql(http, ROTATE, {"ids": [str(pupil)]}, token=school.admin_token)
    new = await card_code(http, school, pupil)
    classroom_address = new_client()
    elsewhere = [login_with_qr(http, old, new_client()) for _ in range(15)]
    assert await asyncio.gather(*elsewhere) == [WRONG] * 15
    here = [(await login_with_qr(http, old, classroom_address))["errors"][0]["code"] for _ in range(15)]
    assert here == ["INVALID_CREDENTIALS"] * 10 + ["RATE_LIMITED"] * 5

    # when the pupil's own new card is scanned, in the classroom and elsewhere
    answers = [await login_with_qr(http, new, client) for client in (classroom_address, new_client())]

    # then the old card counted against no one but the clients that sent it
    assert [answer["user"]["id"] for answer in answers] == [str(pupil)] * 2


async def test_teachers_get_the_cards_of_their_classes_pupils_only(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await classroom(db, school)
    tutor = await sign_in_as(db, school, room.tutor)
    maths_teacher = await sign_in_as(db, school, room.maths_teacher)

    registration = await login_cards(http, tutor, classId=str(room.registration))
    teaching = await login_cards(http, maths_teacher, classId=str(room.maths))
    chosen = await login_cards(
        http, tutor, userIds=[str(room.amy), str(room.tutor), str(room.cal), str(uuid.uuid4())]
    )

    # 3B's live pupils by surname; not its tutor, not Cal (deleted), not Dan (3C)
    assert [card["user"]["username"] for card in registration] == ["ben.a", "amy.o"]
    # a teaching class's cards show each pupil's registration class
    assert [(card["user"]["username"], card["user"]["registrationClass"]["name"]) for card in teaching] == [
        ("amy.o", "3B"),
        ("dan.c", "3C"),
    ]
    assert [card["user"]["username"] for card in chosen] == ["amy.o"]


async def test_a_teacher_gets_no_cards_of_other_classes(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await classroom(db, school)
    tutor = await sign_in_as(db, school, room.tutor)

    other_class = await login_cards_error(http, tutor, classId=str(room.other_registration))
    sheet = await graphql(
        http,
        "query ($ids: [ID!]!) { loginCardSheet(userIds: $ids) { cards { user { username } } "
        "refused { userId reason message } } }",
        {"ids": [str(room.amy), str(room.dan), str(room.tutor), "nope"]},
        token=tutor,
    )

    assert other_class == ("FORBIDDEN", "You can print login cards only for the classes you are in.")
    # a pupil of another class, a teacher and a bad id are each said, not dropped
    assert sheet["data"]["loginCardSheet"] == {
        "cards": [{"user": {"username": "amy.o"}}],
        "refused": [
            {
                "userId": str(room.dan),
                "reason": "NOT_IN_YOUR_CLASSES",
                "message": "You can print login cards only for pupils in the classes you are in.",
            },
            {"userId": str(room.tutor), "reason": "NOT_A_PUPIL", "message": "Only pupils have login cards."},
            {"userId": "nope", "reason": "NOT_FOUND", "message": "No user has this id in your school."},
        ],
    }
    assert await audit_events(db, school, "login_card.printed") == []


async def test_admins_get_any_cards(http: httpx.AsyncClient, db: Database, school: SchoolFixture) -> None:
    room = await classroom(db, school)

    chosen = await login_cards(
        http, school.admin_token, userIds=[str(room.dan), str(room.amy), str(room.tutor), str(room.cal)]
    )
    other_class = await login_cards(http, school.admin_token, classId=str(room.other_registration))

    assert [card["user"]["username"] for card in chosen] == ["amy.o", "dan.c"]  # by class, then name
    assert [card["user"]["username"] for card in other_class] == ["dan.c"]


async def test_printing_cards_is_audited(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await classroom(db, school)
    tutor = await sign_in_as(db, school, room.tutor)

    # reading the cards is not printing them
    cards = await login_cards(http, tutor, classId=str(room.registration))
    assert await audit_events(db, school, "login_card.printed") == []

    record = (
        "mutation ($ids: [ID!]!) { recordLoginCardsPrinted(userIds: $ids) { users { id } "
        "errors { code path userId } } }"
    )
    ids = [card["user"]["id"] for card in cards]
    refused = await graphql(http, record, {"ids": [*ids, str(room.dan)]}, token=tutor)
    done = await graphql(http, record, {"ids": ids}, token=tutor)

    assert refused["data"]["recordLoginCardsPrinted"] == {
        "users": [],
        "errors": [{"code": "INVALID_INPUT", "path": ["userIds"], "userId": str(room.dan)}],
    }
    assert done["data"]["recordLoginCardsPrinted"] == {"users": [{"id": i} for i in ids], "errors": []}
    (printed,) = await audit_events(db, school, "login_card.printed")
    assert printed.actor_id == room.tutor
    assert sorted(printed.target_user_ids) == sorted([room.amy, room.ben])
    assert printed.summary == {"via": "graphql"}


async def test_cards_are_refused_to_tokens_pupils_and_bad_requests(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    room = await classroom(db, school)
    pupil = await sign_in_as(db, school, room.amy)
    api_token = await make_api_token(db, school)
    admin = school.admin_token

    assert (await login_cards_error(http, api_token, classId=str(room.registration)))[0] == "FORBIDDEN"
    assert (await login_cards_error(http, pupil, classId=str(room.registration)))[0] == "FORBIDDEN"
    assert await login_cards_error(http, admin) == ("BAD_REQUEST", "Give either a classId or userIds.")
    assert await login_cards_error(http, admin, classId=str(room.registration), userIds=[]) == (
        "BAD_REQUEST",
        "Give either a classId or userIds.",
    )
    missing = uuid.uuid4()
    assert await login_cards_error(http, admin, classId=str(missing)) == (
        "BAD_REQUEST",
        f"No class has the id {missing}.",
    )
    assert (await login_cards_error(http, admin, classId="3B"))[0] == "BAD_REQUEST"
    assert await login_cards(http, admin, userIds=[]) == []


def test_the_secret_comes_from_the_environment_or_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ROLLCALL_SECRET_KEY", raising=False)
    generated = Settings.from_env().login_code_secret
    assert len(generated) == 32
    assert Settings.from_env().login_code_secret == generated
    assert (tmp_path / "data" / "login-code-secret").read_text() == generated.hex() + "\n"
    assert generated.hex() not in repr(Settings.from_env())

    monkeypatch.setenv("ROLLCALL_SECRET_KEY", "ab" * 32)
    assert Settings.from_env().login_code_secret == b"\xab" * 32

    monkeypatch.setenv("ROLLCALL_SECRET_KEY", "ab" * 16)
    with pytest.raises(ValueError, match="^ROLLCALL_SECRET_KEY: .*at least 32 bytes") as error:
        Settings.from_env()
    assert "ab" * 16 not in str(error.value)
