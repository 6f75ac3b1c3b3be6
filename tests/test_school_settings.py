"""A school's own settings: `updateSchoolSettings`, and what each setting changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import Database
from db.login_cards.codes import default_expiry
from db.models import Provider, UserType
from tests.conftest import SchoolFixture, graphql, make_school, make_user, sign_in_as

SETTINGS = (
    "pupilMinPasswordLength qrSignInEnabled schoolYearEndMonth schoolYearEndDay "
    "deletedUserRetentionDays teachersCanResetPupilPasswords"
)
UPDATE = f"""
mutation ($input: SchoolSettingsInput!) {{
  updateSchoolSettings(input: $input) {{ school {{ {SETTINGS} }} errors {{ code field message }} }}
}}
"""
SCHOOL = f"{{ school {{ {SETTINGS} }} }}"
ADD = """
mutation ($username: String!, $password: String!) {
  addUser(input: {username: $username, password: $password, type: PUPIL}) { user { id } errors { code } }
}
"""
CHANGE_MY_PASSWORD = """
mutation ($current: String!, $new: String!) {
  changeMyPassword(currentPassword: $current, newPassword: $new, confirmPassword: $new) { errors { code } }
}
"""
LOGIN = (
    "mutation ($s: String!, $u: String!, $p: String!) { login(school: $s, username: $u, password: $p) "
    "{ token errors { code } } }"
)
CARDS = "query ($ids: [ID!]) { loginCards(userIds: $ids) { code expiresAt } }"
LOGIN_WITH_QR = "mutation ($code: String!) { loginWithQr(code: $code) { token errors { code } } }"
AUDIT = "{ auditEvents(filter: {action: SCHOOL_SETTINGS_CHANGED}) { edges { node { actorLabel summary } } } }"
DEFAULTS = {
    "pupilMinPasswordLength": 4,
    "qrSignInEnabled": True,
    "schoolYearEndMonth": 8,
    "schoolYearEndDay": 31,
    "deletedUserRetentionDays": 30,
    "teachersCanResetPupilPasswords": False,
}


async def update(http: httpx.AsyncClient, school: SchoolFixture, **settings: Any) -> dict[str, Any]:
    body = await graphql(http, UPDATE, {"input": settings}, token=school.admin_token)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"]["updateSchoolSettings"]
    return payload


async def test_a_reception_class_with_three_letter_passwords_can_be_added(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    # given: the default minimum refuses "cat"
    refused = await graphql(http, ADD, {"username": "cat.kid", "password": "cat"}, token=school.admin_token)
    assert refused["data"]["addUser"]["errors"] == [{"code": "PASSWORD_TOO_WEAK"}]

    # when
    payload = await update(http, school, pupilMinPasswordLength=3)

    # then
    assert payload == {"school": {**DEFAULTS, "pupilMinPasswordLength": 3}, "errors": []}
    added = await graphql(http, ADD, {"username": "cat.kid", "password": "cat"}, token=school.admin_token)
    assert added["data"]["addUser"]["errors"] == []
    login = await graphql(http, LOGIN, {"s": school.slug, "u": "cat.kid", "p": "cat"})
    assert login["data"]["login"]["errors"] == []


async def test_a_field_left_out_stays_as_it_is(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    await update(http, school, deletedUserRetentionDays=90, teachersCanResetPupilPasswords=True)
    payload = await update(http, school, qrSignInEnabled=False)
    assert payload["school"] == {
        **DEFAULTS,
        "deletedUserRetentionDays": 90,
        "qrSignInEnabled": False,
        "teachersCanResetPupilPasswords": True,
    }
    assert (await graphql(http, SCHOOL, token=school.admin_token))["data"]["school"] == payload["school"]


async def test_out_of_range_values_are_refused_and_change_nothing(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    payload = await update(
        http,
        school,
        pupilMinPasswordLength=0,
        deletedUserRetentionDays=3651,
        schoolYearEndMonth=2,
        schoolYearEndDay=30,
        qrSignInEnabled=False,
    )
    assert [(e["code"], e["field"]) for e in payload["errors"]] == [
        ("INVALID_INPUT", "pupilMinPasswordLength"),
        ("INVALID_INPUT", "deletedUserRetentionDays"),
        ("INVALID_INPUT", "schoolYearEndDay"),
    ]
    assert payload["school"] == DEFAULTS
    for settings, field in (
        ({"pupilMinPasswordLength": 65}, "pupilMinPasswordLength"),
        ({"deletedUserRetentionDays": 0}, "deletedUserRetentionDays"),
        ({"schoolYearEndMonth": 13}, "schoolYearEndMonth"),
        ({"schoolYearEndMonth": 0}, "schoolYearEndMonth"),
        ({"schoolYearEndDay": 0}, "schoolYearEndDay"),
        ({"schoolYearEndMonth": 4}, "schoolYearEndMonth"),
    ):  # 31 April
        refused = await update(http, school, **settings)
        assert [(e["code"], e["field"]) for e in refused["errors"]] == [("INVALID_INPUT", field)], settings
    edges = (await graphql(http, AUDIT, token=school.admin_token))["data"]["auditEvents"]["edges"]
    assert edges == []
    limits = await update(
        http,
        school,
        pupilMinPasswordLength=64,
        deletedUserRetentionDays=3650,
        schoolYearEndMonth=2,
        schoolYearEndDay=29,
    )
    assert limits["errors"] == []
    assert (await update(http, school, pupilMinPasswordLength=1, deletedUserRetentionDays=1))["errors"] == []
    null = await graphql(http, UPDATE, {"input": {"qrSignInEnabled": None}}, token=school.admin_token)
    assert null["data"] is None and "null" in null["errors"][0]["message"]


async def test_every_change_is_audited_with_old_and_new_values(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    await update(http, school, pupilMinPasswordLength=3, qrSignInEnabled=True, schoolYearEndDay=30)
    await update(http, school, pupilMinPasswordLength=3)  # no change, no event
    edges = (await graphql(http, AUDIT, token=school.admin_token))["data"]["auditEvents"]["edges"]
    assert [edge["node"] for edge in edges] == [
        {
            "actorLabel": "admin",
            "summary": {
                "changes": {
                    "pupilMinPasswordLength": {"from": 4, "to": 3},
                    "schoolYearEndDay": {"from": 31, "to": 30},
                }
            },
        }
    ]


async def test_the_year_end_moves_the_expiry_of_login_cards(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school)
    payload = await update(http, school, schoolYearEndMonth=7, schoolYearEndDay=20)
    assert payload["errors"] == []
    cards = await graphql(http, CARDS, {"ids": [str(pupil)]}, token=school.admin_token)
    (card,) = cards["data"]["loginCards"]
    expected = default_expiry(datetime.now(UTC).date(), school_year_ends=(7, 20))
    assert datetime.fromisoformat(card["expiresAt"]) == expected


async def test_qr_sign_in_can_be_switched_off_and_on(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school)
    cards = await graphql(http, CARDS, {"ids": [str(pupil)]}, token=school.admin_token)
    (card,) = cards["data"]["loginCards"]
    client = {"X-Forwarded-For": "2001:db8::5e:77"}
    await update(http, school, qrSignInEnabled=False)
    off = await graphql(http, LOGIN_WITH_QR, {"code": card["code"]}, headers=client)
    assert off["data"]["loginWithQr"]["errors"] == [{"code": "INVALID_CREDENTIALS"}]
    await update(http, school, qrSignInEnabled=True)
    on = await graphql(http, LOGIN_WITH_QR, {"code": card["code"]}, headers=client)
    assert on["data"]["loginWithQr"]["errors"] == []


async def test_a_new_minimum_applies_at_the_next_change_and_never_invalidates(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a pupil with a three-letter password
    await update(http, school, pupilMinPasswordLength=3)
    await graphql(http, ADD, {"username": "sun.kid", "password": "sun"}, token=school.admin_token)

    # when the minimum goes up
    await update(http, school, pupilMinPasswordLength=6)

    # then the old password still signs in, and a new one must follow the new minimum
    login = (await graphql(http, LOGIN, {"s": school.slug, "u": "sun.kid", "p": "sun"}))["data"]["login"]
    assert login["errors"] == []
    short = await graphql(http, CHANGE_MY_PASSWORD, {"current": "sun", "new": "moon"}, token=login["token"])
    assert short["data"]["changeMyPassword"]["errors"] == [{"code": "PASSWORD_TOO_WEAK"}]
    longer = await graphql(
        http, CHANGE_MY_PASSWORD, {"current": "sun", "new": "sunrise"}, token=login["token"]
    )
    assert longer["data"]["changeMyPassword"]["errors"] == []


async def test_settings_change_in_a_managed_school_too(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database
) -> None:
    school = await make_school(owner_engine, db, provider=Provider.HWB)
    payload = await update(http, school, pupilMinPasswordLength=3, teachersCanResetPupilPasswords=True)
    assert payload["errors"] == [] and payload["school"]["pupilMinPasswordLength"] == 3


async def test_only_admins_see_the_admins_settings(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    teacher = await sign_in_as(db, school, await make_user(db, school, type=UserType.TEACHER))
    seen = await graphql(
        http, "{ school { pupilMinPasswordLength teachersCanResetPupilPasswords } }", token=teacher
    )
    assert seen["data"]["school"] == {"pupilMinPasswordLength": 4, "teachersCanResetPupilPasswords": False}
    hidden = await graphql(http, "{ school { deletedUserRetentionDays } }", token=teacher)
    assert [e["extensions"]["code"] for e in hidden["errors"]] == ["FORBIDDEN"]
