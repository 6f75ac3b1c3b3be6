"""Sign-in, sessions, the password-change gate, changeMyPassword and re-authentication, over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import throttle
from db.device_cookies import LIFETIME, issue_device_cookie, trusted_device
from db.engine import Database
from db.models import UserType
from db.passwords import hash_password_async
from db.scope import school_scope
from db.signin import sign_in
from db.users import create_user
from tests.conftest import ADMIN_PASSWORD, POLICY, SchoolFixture, graphql, make_user, sign_in_as
from web.http_auth import DEVICE_COOKIE
from web.settings import Settings

LOGIN = """
mutation ($school: String!, $username: String!, $password: String!) {
  login(school: $school, username: $username, password: $password) {
    token user { id username type } errors { code message field }
  }
}
"""
ME = "{ me { id username mustChangePassword } }"
SCHOOL = "{ school { slug } }"
LOGOUT = "mutation { logout { errors { code } } }"
CHANGE = """
mutation ($current: String!, $new: String!, $confirm: String!) {
  changeMyPassword(currentPassword: $current, newPassword: $new, confirmPassword: $confirm) {
    user { id mustChangePassword version } errors { code message field }
  }
}
"""


async def login(http: httpx.AsyncClient, school: str, username: str, password: str) -> dict[str, Any]:
    body = await graphql(http, LOGIN, {"school": school, "username": username, "password": password})
    payload: dict[str, Any] = body["data"]["login"]
    return payload


def new_client() -> str:
    """An address of its own (the test server believes X-Forwarded-For from loopback)."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


def from_browser(client: str, device: str | None) -> dict[str, str]:
    return {"X-Forwarded-For": client, **({"Cookie": f"{DEVICE_COOKIE}={device}"} if device else {})}


async def login_from(
    http: httpx.AsyncClient, client: str, school: str, username: str, password: str, device: str | None = None
) -> tuple[str | None, str | None]:
    """Sign in from `client`, with the device cookie `device` if given: the error code (None when signed in)
    and the device cookie the answer sets, if any."""
    response = await http.post(
        "/graphql",
        json={"query": LOGIN, "variables": {"school": school, "username": username, "password": password}},
        headers=from_browser(client, device),
    )
    http.cookies.clear()
    errors = response.json()["data"]["login"]["errors"]
    return (errors[0]["code"] if errors else None), response.cookies.get(DEVICE_COOKIE)


async def fail_from(
    http: httpx.AsyncClient, client: str, school: str, username: str, times: int, device: str | None = None
) -> list[str]:
    """`times` wrong passwords from `client`, packed fifteen to a request; their error codes."""
    codes: list[str] = []
    while len(codes) < times:
        aliased = (
            "mutation {"
            + " ".join(
                f'a{i}: login(school: "{school}", username: "{username}", password: "guess{i}") '
                "{ errors { code } }"
                for i in range(min(15, times - len(codes)))
            )
            + "}"
        )
        response = await http.post("/graphql", json={"query": aliased}, headers=from_browser(client, device))
        http.cookies.clear()
        codes += [payload["errors"][0]["code"] for payload in response.json()["data"].values()]
    return codes


async def test_login_returns_a_session_token_and_the_user(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    payload = await login(http, school.slug, "ADMIN", ADMIN_PASSWORD)
    assert payload["errors"] == []
    assert payload["user"] == {"id": str(school.admin_id), "username": "admin", "type": "TEACHER"}
    token = payload["token"]
    me = await graphql(http, ME, token=token)
    assert me["data"]["me"]["id"] == str(school.admin_id)


async def test_the_session_is_stored_only_as_a_sha256_hash(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    token = (await login(http, school.slug, "admin", ADMIN_PASSWORD))["token"]
    assert len(token) >= 4 + 43  # prefix and 256 bits in base64url
    async with school_scope(db, school.id) as session:
        stored = (await session.execute(text("select token_hash from sessions"))).scalars().all()
        dumped = (await session.execute(text("select string_agg(s::text, '') from sessions s"))).scalar_one()
    assert hashlib.sha256(token.encode()).digest() in stored
    assert token not in dumped


async def test_the_browser_gets_an_httponly_samesite_cookie_and_must_send_the_csrf_header(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    response = await http.post(
        "/graphql",
        json={
            "query": LOGIN,
            "variables": {"school": school.slug, "username": "admin", "password": ADMIN_PASSWORD},
        },
    )
    cookie = response.headers["set-cookie"]
    assert "rollcall_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    # The client now holds the cookie; a POST without the CSRF header is refused.
    refused = await http.post("/graphql", json={"query": ME})
    assert refused.status_code == 403
    assert "x-rollcall-csrf" in refused.text
    allowed = await graphql(http, ME, headers={"X-Rollcall-CSRF": "1"}, keep_cookies=True)
    assert allowed["data"]["me"]["username"] == "admin"


async def test_every_kind_of_wrong_sign_in_gets_the_same_answer(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, owner_engine: Any
) -> None:
    deleted = await make_user(db, school, username="gone", password="gone-pass")
    async with school_scope(db, school.id) as session:
        await session.execute(text("update users set deleted_at = now() where id = :id"), {"id": deleted})
    answers = [
        await login(http, "no-such-school", "admin", ADMIN_PASSWORD),
        await login(http, school.slug, "nobody", ADMIN_PASSWORD),
        await login(http, school.slug, "gone", "gone-pass"),
        await login(http, school.slug, "admin", "wrong-password"),
    ]
    expected = {
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
    assert answers == [expected] * 4


async def test_an_unknown_user_costs_as_much_time_as_a_wrong_password(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    async def timed(username: str) -> float:
        start = time.perf_counter()
        await login(http, school.slug, username, "not-the-password")
        return time.perf_counter() - start

    wrong = statistics.median([await timed("admin") for _ in range(3)])
    unknown = statistics.median([await timed(f"nobody{i}") for i in range(3)])
    # Both verify one argon2 hash; without the dummy hash the unknown user would answer many times faster.
    assert unknown > wrong * 0.5


async def test_usernames_match_case_insensitively(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    await make_user(db, school, username="Amy.Brown", password="pupil-pass")
    assert (await login(http, school.slug.upper(), "amy.brown", "pupil-pass"))["errors"] == []
    # lowered as the database lowers the stored name, whatever Python's lower makes of it ('İ': i and a dot)
    for name in ["İpek", "Ärzte"]:
        await make_user(db, school, username=name, password="pupil-pass")
        for typed in (name, name.upper()):
            assert (await login(http, school.slug, typed, "pupil-pass"))["errors"] == [], typed


async def test_passwords_are_case_sensitive_and_never_truncated(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    long_password = "a" * 100 + "B" * 28
    await make_user(db, school, username="longpass", password=long_password)
    assert (await login(http, school.slug, "longpass", "a" * 100 + "b" * 28))["errors"]
    assert (await login(http, school.slug, "longpass", "a" * 100))["errors"]
    assert (await login(http, school.slug, "longpass", long_password))["errors"] == []


async def test_logout_revokes_the_session(http: httpx.AsyncClient, school: SchoolFixture) -> None:
    token = (await login(http, school.slug, "admin", ADMIN_PASSWORD))["token"]
    assert (await graphql(http, LOGOUT, token=token))["data"]["logout"]["errors"] == []
    assert (await graphql(http, ME, token=token))["data"]["me"] is None
    assert (await graphql(http, SCHOOL, token=token))["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_session_ends_when_idle_too_long_and_at_its_absolute_lifetime(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    idle = await sign_in_as(db, school, school.admin_id)
    old = await sign_in_as(db, school, school.admin_id)
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "update sessions set last_seen_at = now() - interval '61 minutes' "
                "where token_hash = sha256(convert_to(:t, 'utf8'))"
            ),
            {"t": idle},
        )
        await session.execute(
            text(
                "update sessions set expires_at = now() - interval '1 second' "
                "where token_hash = sha256(convert_to(:t, 'utf8'))"
            ),
            {"t": old},
        )
    for token in (idle, old):
        assert (await graphql(http, SCHOOL, token=token))["errors"][0]["extensions"][
            "code"
        ] == "UNAUTHENTICATED"


async def test_an_old_hash_is_upgraded_at_sign_in(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("old-hash-pass")
    user = await make_user(db, school, username="oldhash", password="x")
    async with school_scope(db, school.id) as session:
        await session.execute(
            text("update users set password_hash = :h where id = :id"), {"h": old, "id": user}
        )
    assert (await login(http, school.slug, "oldhash", "old-hash-pass"))["errors"] == []
    async with school_scope(db, school.id) as session:
        new = (
            await session.execute(text("select password_hash from users where id = :id"), {"id": user})
        ).scalar()
    assert new.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await login(http, school.slug, "oldhash", "old-hash-pass"))["errors"] == []


async def test_must_change_password_allows_only_changing_it(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    await make_user(
        db, school, username="newbie", password="first-pass", type=UserType.TEACHER, must_change_password=True
    )
    token = (await login(http, school.slug, "newbie", "first-pass"))["token"]
    gate = await graphql(http, SCHOOL, token=token)
    assert gate["errors"][0]["extensions"]["code"] == "PASSWORD_CHANGE_REQUIRED"
    assert (await graphql(http, ME, token=token))["data"]["me"]["mustChangePassword"] is True
    changed = await graphql(
        http,
        CHANGE,
        {"current": "first-pass", "new": "my-own-secret", "confirm": "my-own-secret"},
        token=token,
    )
    assert changed["data"]["changeMyPassword"]["errors"] == []
    assert changed["data"]["changeMyPassword"]["user"]["mustChangePassword"] is False
    assert (await graphql(http, SCHOOL, token=token))["data"]["school"]["slug"] == school.slug
    assert (await login(http, school.slug, "newbie", "my-own-secret"))["errors"] == []


async def test_change_my_password_checks_everything_and_ends_other_sessions(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    teacher = await make_user(db, school, username="t1", password="teacher-pass", type=UserType.TEACHER)
    token, other = await sign_in_as(db, school, teacher), await sign_in_as(db, school, teacher)

    async def change(current: str, new: str, confirm: str) -> list[dict[str, Any]]:
        body = await graphql(http, CHANGE, {"current": current, "new": new, "confirm": confirm}, token=token)
        errors: list[dict[str, Any]] = body["data"]["changeMyPassword"]["errors"]
        return errors

    assert [e["code"] for e in await change("wrong", "fine-password", "fine-password")] == ["REAUTH_FAILED"]
    assert [e["code"] for e in await change("teacher-pass", "fine-password", "Fine-password")] == [
        "PASSWORDS_DO_NOT_MATCH"
    ]
    assert [e["code"] for e in await change("teacher-pass", "short", "short")] == ["PASSWORD_TOO_WEAK"]
    assert [e["code"] for e in await change("teacher-pass", "Password123", "Password123")] == [
        "PASSWORD_TOO_WEAK"
    ]
    assert await change("teacher-pass", "fine-password", "fine-password") == []
    assert (await graphql(http, ME, token=token))["data"]["me"]["username"] == "t1"
    assert (await graphql(http, ME, token=other))["data"]["me"] is None


async def test_pupils_follow_the_schools_own_minimum(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school, username="p1", password="cat1")
    token = await sign_in_as(db, school, pupil)
    short = await graphql(http, CHANGE, {"current": "cat1", "new": "dog", "confirm": "dog"}, token=token)
    assert short["data"]["changeMyPassword"]["errors"][0]["code"] == "PASSWORD_TOO_WEAK"
    ok = await graphql(http, CHANGE, {"current": "cat1", "new": "dog1", "confirm": "dog1"}, token=token)
    assert ok["data"]["changeMyPassword"]["errors"] == []
    async with school_scope(db, school.id) as session:
        await session.execute(text("update schools set pupil_min_password_length = 6"))
    longer = await graphql(http, CHANGE, {"current": "dog1", "new": "fish1", "confirm": "fish1"}, token=token)
    assert longer["data"]["changeMyPassword"]["errors"][0]["code"] == "PASSWORD_TOO_WEAK"


async def test_repeated_failed_reauthentication_ends_the_session(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    teacher = await make_user(db, school, username="t2", password="teacher-pass", type=UserType.TEACHER)
    token = await sign_in_as(db, school, teacher)
    aliased = (
        "mutation {"
        + " ".join(
            f'a{i}: changeMyPassword(currentPassword: "guess{i}", newPassword: "x-new-pass", confirmPassword: '
            f'"x-new-pass") {{ errors {{ code message }} }}'
            for i in range(6)
        )
        + "}"
    )
    body = await graphql(http, aliased, token=token)
    assert {payload["errors"][0]["code"] for payload in body["data"].values()} == {"REAUTH_FAILED"}
    assert (await graphql(http, ME, token=token))["data"]["me"] is None
    # The right password does not help a session that has been ended.
    again = await graphql(
        http,
        CHANGE,
        {"current": "teacher-pass", "new": "fine-password", "confirm": "fine-password"},
        token=token,
    )
    assert again["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_sign_in_is_throttled_per_account_even_with_aliases(
    http: httpx.AsyncClient, school: SchoolFixture
) -> None:
    aliased = (
        "mutation {"
        + " ".join(
            f'a{i}: login(school: "{school.slug}", username: "admin", password: "guess{i}") {{ errors {{ code }} }}'
            for i in range(14)
        )
        + "}"
    )
    body = await graphql(http, aliased)
    codes = [payload["errors"][0]["code"] for payload in body["data"].values()]
    assert codes.count("INVALID_CREDENTIALS") == 10
    assert codes.count("RATE_LIMITED") == 4
    locked = await login(http, school.slug, "admin", ADMIN_PASSWORD)
    assert locked["errors"] == [
        {
            "code": "RATE_LIMITED",
            "field": None,
            "message": "Too many attempts to sign in. Wait a few minutes and try again.",
        }
    ]


async def test_failures_slow_sign_in_down(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    await make_user(db, school, username="slow", password="pupil-pass")
    started = time.perf_counter()
    await asyncio.gather(*(login(http, school.slug, "slow", "nope") for _ in range(3)))
    fast = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(4):
        await login(http, school.slug, "slow", "nope")
    slowed = time.perf_counter() - started
    assert slowed > fast + 1.0  # 0.1 + 0.2 + 0.4 + 0.8 seconds of added delay


async def test_sign_in_is_throttled_per_client_address(db: Database) -> None:
    client = "198.51.100.7"
    results = [
        await throttle.count_attempt(db, account=f"school:user{i}", client=client, known=True, client_limit=5)
        for i in range(7)
    ]
    assert [r.refused for r in results] == [False] * 5 + [True] * 2
    other = await throttle.count_attempt(
        db, account="school:someone", client="198.51.100.8", known=True, client_limit=5
    )
    assert not other.refused


async def test_failures_from_one_address_do_not_keep_the_owner_out_from_another(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given fifteen wrong passwords for a pupil from one address
    await make_user(db, school, username="amy", password="amy-pass")
    attacker = new_client()
    assert (await fail_from(http, attacker, school.slug, "amy", 15)).count("RATE_LIMITED") == 5

    # then that address is kept out, and the pupil signs in from anywhere else
    assert (await login_from(http, attacker, school.slug, "amy", "amy-pass"))[0] == "RATE_LIMITED"
    assert (await login_from(http, new_client(), school.slug, "amy", "amy-pass"))[0] is None


async def test_one_address_failing_far_past_its_limit_does_not_keep_the_owner_out_from_another(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given more wrong passwords for the admin from one address than the account-wide limit
    attacker = new_client()
    codes = await fail_from(http, attacker, school.slug, "admin", throttle.ACCOUNT_WIDE_LIMIT + 20)
    assert codes.count("INVALID_CREDENTIALS") == throttle.ACCOUNT_LIMIT

    # then only the attempts that address was let make count everywhere: the admin still signs in from
    # another address, with no device cookie
    assert (await login_from(http, attacker, school.slug, "admin", ADMIN_PASSWORD))[0] == "RATE_LIMITED"
    assert (await login_from(http, new_client(), school.slug, "admin", ADMIN_PASSWORD))[0] is None


async def test_a_browser_that_signed_in_before_gets_in_while_its_own_address_is_under_attack(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a pupil who signed in once at school, and a classmate behind the same address guessing
    await make_user(db, school, username="ben", password="ben-pass")
    await make_user(db, school, username="cat", password="cat-pass")
    classroom = new_client()
    response = await http.post(
        "/graphql",
        json={
            "query": LOGIN,
            "variables": {"school": school.slug, "username": "ben", "password": "ben-pass"},
        },
        headers={"X-Forwarded-For": classroom},
    )
    http.cookies.clear()
    (device_header,) = [
        header for header in response.headers.get_list("set-cookie") if header.startswith(f"{DEVICE_COOKIE}=")
    ]
    assert "HttpOnly" in device_header and "SameSite=strict" in device_header
    device = response.cookies[DEVICE_COOKIE]
    await fail_from(http, classroom, school.slug, "ben", 15)
    cat_device = (await login_from(http, new_client(), school.slug, "cat", "cat-pass"))[1]

    # when Ben signs in again from his browser, and from a browser without his cookie
    with_cookie = await login_from(http, classroom, school.slug, "ben", "ben-pass", device=device)
    without = await login_from(http, classroom, school.slug, "ben", "ben-pass")
    forged = await login_from(http, classroom, school.slug, "ben", "ben-pass", device=device[:-2] + "AA")
    someone_elses = await login_from(http, classroom, school.slug, "ben", "ben-pass", device=cat_device)

    # then only his own browser gets in, and it gets a fresh cookie
    assert with_cookie[0] is None and with_cookie[1] not in (None, device)
    assert [without[0], forged[0], someone_elses[0]] == ["RATE_LIMITED"] * 3
    # Guesses that carry the cookie count in the browser's own bucket, so it cannot be a master key.
    guesses = await fail_from(http, new_client(), school.slug, "ben", 12, device=device)
    assert guesses.count("RATE_LIMITED") == 2
    assert (await login_from(http, new_client(), school.slug, "ben", "ben-pass"))[0] is None


async def test_one_pupils_failures_do_not_refuse_the_others_behind_the_schools_address(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a school behind one address, where one pupil's password is tried 105 times
    await make_user(db, school, username="dev", password="dev-pass")
    await make_user(db, school, username="eve", password="eve-pass")
    school_nat = new_client()
    assert (await fail_from(http, school_nat, school.slug, "dev", 105)).count("INVALID_CREDENTIALS") == 10

    # then the other pupils behind it still sign in
    assert (await login_from(http, school_nat, school.slug, "eve", "eve-pass"))[0] is None


async def fail_names_from(
    http: httpx.AsyncClient, client: str, school: str, usernames: list[str]
) -> list[str]:
    """One wrong password for each of `usernames` from `client`, packed fifteen to a request; the codes."""
    codes: list[str] = []
    for start in range(0, len(usernames), 15):
        aliased = (
            "mutation {"
            + " ".join(
                f'a{i}: login(school: "{school}", username: "{name}", password: "guess") {{ errors {{ code }} }}'
                for i, name in enumerate(usernames[start : start + 15])
            )
            + "}"
        )
        response = await http.post("/graphql", json={"query": aliased}, headers=from_browser(client, None))
        http.cookies.clear()
        codes += [payload["errors"][0]["code"] for payload in response.json()["data"].values()]
    return codes


async def make_pupils(db: Database, school: SchoolFixture, count: int, password: str) -> list[str]:
    """`count` pupils sharing one password (hashed once); their usernames."""
    password_hash = await hash_password_async(password)
    usernames = [f"p{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    async with school_scope(db, school.id) as session:
        for username in usernames:
            await create_user(
                session,
                school_id=school.id,
                username=username,
                password_hash=password_hash,
                type=UserType.PUPIL,
            )
    return usernames


async def test_made_up_usernames_from_a_schools_address_do_not_keep_its_pupils_out(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given a pupil who has never signed in from this browser, behind a school's one address
    await make_user(db, school, username="fay", password="fay-pass")
    school_nat = new_client()

    # when someone behind that address tries more made-up usernames than the address limit
    made_up = [f"nobody-{n}-{uuid.uuid4().hex[:6]}" for n in range(throttle.CLIENT_LIMIT + 5)]
    codes = await fail_names_from(http, school_nat, school.slug, made_up)

    # then every one is answered as a wrong password would be, and the pupil still signs in from there
    assert set(codes) == {"INVALID_CREDENTIALS"}
    assert (await login_from(http, school_nat, school.slug, "nobody-else", "guess"))[
        0
    ] == "INVALID_CREDENTIALS"
    assert (await login_from(http, school_nat, school.slug, "fay", "wrong"))[0] == "INVALID_CREDENTIALS"
    assert (await login_from(http, school_nat, school.slug, "fay", "fay-pass"))[0] is None


async def test_spraying_many_real_accounts_from_one_address_is_stopped(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture
) -> None:
    # given more pupils than the address limit, and one more pupil who knows her password
    sprayed = await make_pupils(db, school, throttle.CLIENT_LIMIT + 3, "shared-pass")
    await make_user(db, school, username="gus", password="gus-pass")
    attacker = new_client()

    # when one address tries one password on each of them
    codes = await fail_names_from(http, attacker, school.slug, sprayed)

    # then the address is refused once it has failed on the limit's worth of accounts
    assert codes == ["INVALID_CREDENTIALS"] * throttle.CLIENT_LIMIT + ["RATE_LIMITED"] * 3
    # and from then on every attempt from it is refused alike, whether the name is real or not
    assert [
        (await login_from(http, attacker, school.slug, name, password))[0]
        for name, password in (("gus", "gus-pass"), ("gus", "wrong"), ("nobody-at-all", "wrong"))
    ] == ["RATE_LIMITED"] * 3
    assert (await login_from(http, new_client(), school.slug, "gus", "gus-pass"))[0] is None


async def test_a_browser_holds_one_device_cookie_naming_whoever_signed_in_last(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, settings: Settings
) -> None:
    # given two pupils sharing one classroom computer
    hal = await make_user(db, school, username="hal", password="hal-pass")
    ivy = await make_user(db, school, username="ivy", password="ivy-pass")
    classroom = new_client()

    async def sign_in(username: str, password: str, device: str | None) -> tuple[str | None, list[str]]:
        response = await http.post(
            "/graphql",
            json={
                "query": LOGIN,
                "variables": {"school": school.slug, "username": username, "password": password},
            },
            headers=from_browser(classroom, device),
        )
        http.cookies.clear()
        errors = response.json()["data"]["login"]["errors"]
        headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{DEVICE_COOKIE}=")]
        return (errors[0]["code"] if errors else None), headers

    def names(header: str, user: uuid.UUID) -> bool:
        value = header.split(";", 1)[0].split("=", 1)[1]
        now = datetime.now(UTC)
        found = trusted_device(
            value, secret=settings.login_code_secret, school_id=school.id, user_id=user, now=now
        )
        return found is not None

    def value(header: str) -> str:
        return header.split(";", 1)[0].split("=", 1)[1]

    # when Hal signs in twice, then Ivy on the same browser, then someone fails as Ivy
    first = await sign_in("hal", "hal-pass", None)
    again = await sign_in("hal", "hal-pass", value(first[1][0]))
    ivys = await sign_in("ivy", "ivy-pass", value(again[1][0]))
    failed = await sign_in("ivy", "wrong", value(ivys[1][0]))

    # then each sign-in sets the one cookie afresh, under one name and path, naming that user only
    for code, headers in (first, again, ivys):
        assert code is None and len(headers) == 1 and "Path=/graphql" in headers[0]
    assert len({value(first[1][0]), value(again[1][0]), value(ivys[1][0])}) == 3
    assert names(first[1][0], hal) and names(again[1][0], hal) and not names(again[1][0], ivy)
    assert names(ivys[1][0], ivy) and not names(ivys[1][0], hal)
    # and a failed attempt leaves the browser's cookie as it was
    assert failed == ("INVALID_CREDENTIALS", [])


async def test_an_address_is_refused_after_failing_on_many_different_accounts(db: Database) -> None:
    client = new_client()
    same = [
        await throttle.count_attempt(db, account="school:amy", client=client, known=True, client_limit=2)
        for _ in range(5)
    ]
    others = [
        await throttle.count_attempt(db, account=f"school:user{i}", client=client, known=True, client_limit=2)
        for i in range(3)
    ]
    assert [a.refused for a in same + others] == [False] * 5 + [False, True, True]


async def test_unknown_names_do_not_use_up_an_address_but_are_refused_once_it_is_full(db: Database) -> None:
    client = new_client()
    unknown = [
        await throttle.count_attempt(
            db, account=f"school:nobody{i}", client=client, known=False, client_limit=2
        )
        for i in range(5)
    ]
    known = [
        await throttle.count_attempt(db, account=f"school:user{i}", client=client, known=True, client_limit=2)
        for i in range(3)
    ]
    after = await throttle.count_attempt(
        db, account="school:nobody-else", client=client, known=False, client_limit=2
    )
    assert [a.refused for a in unknown + known + [after]] == [False] * 5 + [False, False, True, True]


async def test_a_correct_password_forgives_its_attempt_in_the_shared_buckets(db: Database) -> None:
    client, account = new_client(), f"school:{uuid.uuid4().hex}"
    for _ in range(3):
        attempt = await throttle.count_attempt(
            db, account=account, client=client, known=True, account_wide_limit=2, client_limit=1
        )
        assert not attempt.refused
        await throttle.succeeded(db, attempt)
    # the address forgot each of them, so one more account still fits, and a second does not
    first = await throttle.count_attempt(
        db, account="school:other", client=client, known=True, client_limit=1
    )
    second = await throttle.count_attempt(
        db, account="school:third", client=client, known=True, client_limit=1
    )
    assert (first.refused, second.refused) == (False, True)


async def test_an_address_adds_at_most_its_own_limit_to_the_account_wide_count(db: Database) -> None:
    account, attacker = f"school:{uuid.uuid4().hex}", new_client()
    limits = {"account_limit": 3, "account_wide_limit": 5}
    flood = [
        await throttle.count_attempt(db, account=account, client=attacker, known=True, **limits)
        for _ in range(20)
    ]
    assert [a.refused for a in flood] == [False] * 3 + [True] * 17
    # the account-wide count holds the three the address was let make, so two more addresses fit
    others = [
        await throttle.count_attempt(db, account=account, client=new_client(), known=True, **limits)
        for _ in range(3)
    ]
    assert [a.refused for a in others] == [False, False, True]


async def test_guessing_from_many_addresses_stops_account_wide_but_not_for_a_trusted_browser(
    db: Database,
) -> None:
    account = f"school:{uuid.uuid4().hex}"
    spread = [
        await throttle.count_attempt(
            db, account=account, client=new_client(), known=True, account_wide_limit=5
        )
        for _ in range(7)
    ]
    assert [a.refused for a in spread] == [False] * 5 + [True] * 2
    trusted = await throttle.count_attempt(
        db, account=account, client=new_client(), known=True, device=b"d" * 16, account_wide_limit=5
    )
    assert not trusted.refused


def test_a_device_cookie_names_one_user_and_cannot_be_forged_or_kept_forever() -> None:
    secret, school_id, user_id = bytes(range(32)), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    cookie = issue_device_cookie(secret=secret, school_id=school_id, user_id=user_id, now=now)

    def check(
        value: str | None, *, key: bytes = secret, user: uuid.UUID = user_id, at: datetime = now
    ) -> bytes | None:
        return trusted_device(value, secret=key, school_id=school_id, user_id=user, now=at)

    device = check(cookie)
    assert device is not None and len(device) == 16
    assert issue_device_cookie(secret=secret, school_id=school_id, user_id=user_id, now=now) != cookie
    flipped = cookie[:10] + ("A" if cookie[10] != "A" else "B") + cookie[11:]
    assert [check(flipped), check(cookie + "A"), check(""), check(None)] == [None] * 4
    assert check(cookie, key=bytes(range(1, 33))) is None
    assert check(cookie, user=uuid.uuid4()) is None
    assert check(cookie, at=now + LIFETIME + timedelta(minutes=1)) is None


async def test_a_pupil_password_hash_is_argon2id(db: Database) -> None:
    assert (await hash_password_async("cat1")).startswith("$argon2id$")


async def test_a_sign_in_clears_its_own_bucket_forgives_the_shared_ones_and_is_recorded(
    http: httpx.AsyncClient, owner_engine: AsyncEngine, db: Database, school: SchoolFixture
) -> None:
    client = new_client()
    buckets = throttle.keys(f"{school.slug}:admin", client)
    headers = {"X-Forwarded-For": client}
    wrong = await graphql(
        http, LOGIN, {"school": school.slug, "username": "admin", "password": "not-it"}, headers=headers
    )
    assert wrong["data"]["login"]["errors"][0]["code"] == "INVALID_CREDENTIALS"
    right = await graphql(
        http, LOGIN, {"school": school.slug, "username": "Admin", "password": ADMIN_PASSWORD}, headers=headers
    )
    assert right["data"]["login"]["errors"] == []
    async with owner_engine.begin() as connection:
        counts = dict(
            (
                await connection.execute(
                    text("select key, attempts from sign_in_throttle where key = any(:keys)"),
                    {"keys": [buckets.own, buckets.wide, buckets.client]},
                )
            ).all()
        )
    # Two attempts counted, the right one forgiven; the address counted the account's first attempt only.
    assert counts == {buckets.wide: 1, buckets.client: 0}
    async with school_scope(db, school.id) as session:
        signed_in, recorded = (
            await session.execute(
                text(
                    "select u.last_sign_in_at is not null, (select count(*) from audit_events a "
                    "where a.action = 'user.signed_in' and a.actor_label = 'admin') from users u where u.id = :admin"
                ),
                {"admin": school.admin_id},
            )
        ).one()
    assert signed_in and recorded == 1


async def test_a_statement_whose_answer_is_lost_is_not_run_again(
    monkeypatch: pytest.MonkeyPatch, db: Database, owner_engine: AsyncEngine, school: SchoolFixture
) -> None:
    # given a connection that drops once, after the attempt's statement has run (and, autocommitted, committed)
    real = asyncpg.connection.Connection.fetch
    dropped: list[str] = []

    async def fetch(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        rows = await real(self, query, *args, **kwargs)
        if "rollcall_sign_in_attempt" in query and not dropped:
            dropped.append(query)
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        return rows

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", fetch)

    # when a wrong password is tried
    client = "198.51.100.77"
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await sign_in(
            db,
            school=school.slug,
            username="admin",
            password="wrong",
            client=client,
            policy=POLICY,
            secret=b"s" * 32,
        )

    # then the attempt counted once, not once for each try of the statement
    assert dropped
    own = throttle.keys(f"{school.slug}:admin", client).own
    async with owner_engine.connect() as connection:
        attempts = (
            await connection.execute(text("select attempts from sign_in_throttle where key = :k"), {"k": own})
        ).scalar_one()
    assert attempts == 1
