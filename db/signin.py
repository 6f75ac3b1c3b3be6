"""Signing in with a school, a username and a password, and changing one's own password."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from db import audit, throttle
from db.audit import Actor, AuditAction
from db.device_cookies import device_claim, issue_device_cookie
from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem
from db.models import School, SignInMethod, User, UserType
from db.passwords import (
    hash_password_async,
    needs_rehash,
    password_problem,
    verify_against_dummy_async,
    verify_password_async,
)
from db.schools import SLUG
from db.sessions import SESSION_PREFIX, SessionPolicy, new_secret, revoke_sessions

INVALID = Problem(
    ErrorCode.INVALID_CREDENTIALS, "That school, username and password do not match an account."
)
RATE_LIMITED = Problem(
    ErrorCode.RATE_LIMITED, "Too many attempts to sign in. Wait a few minutes and try again."
)


@dataclass(frozen=True, slots=True)
class SignedIn:
    token: str
    user: User
    # For the browser to keep: its later attempts for this user are counted apart (db/device_cookies.py).
    device_cookie: str | None = None


# Before the password is checked, ONE statement (migration 0022): the school found by its exact slug and bound,
# the active user found by name, and the attempt counted in its throttle buckets; it returns the hash to check.
_ATTEMPT = "select * from rollcall_sign_in_attempt($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
# After a correct password, ONE statement: the session opened for an account still active with the hash that
# was checked (upgraded to the new hash when given), the last sign-in time, the audit event, and the attempt
# forgiven in the throttle; it returns the user's row, or nothing (then the answer is a wrong password).
_OPEN = "select * from rollcall_open_session($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
_SIGNED_IN_SUMMARY = json.dumps({"method": SignInMethod.PASSWORD.value})


async def sign_in(
    db: Database,
    *,
    school: str,
    username: str,
    password: str,
    client: str,
    policy: SessionPolicy,
    secret: bytes,
    device_cookie: str | None = None,
    now: datetime | None = None,
) -> SignedIn:
    """Start a session, or refuse with one answer for every kind of wrong (no account enumeration).

    The attempt is counted before the password is checked: from a browser holding a device cookie for this
    user, in that browser's own bucket; from anywhere else, in the account's public ones (db/throttle.py).
    No connection is held while the password is checked; the session opens only if the account is still
    active with the very hash that was checked. Two statements in all, each its own transaction.
    """
    slug, name, now = school.strip().lower(), username.strip(), now or datetime.now(UTC)
    claim = device_claim(device_cookie, secret=secret, now=now)
    buckets = throttle.keys(f"{slug}:{name}", client, None if claim is None else claim.device)
    # Usernames never hold NUL, which PostgreSQL text cannot even compare; a slug of another form is no school's.
    findable = "\x00" not in name and SLUG.fullmatch(slug) is not None
    ((school_id, user_id, checked, device, attempts, everywhere, from_client),) = await db.statement(
        _ATTEMPT,
        slug if findable else None,
        name if findable else None,  # lowered in SQL, by the `lower` that made `username_key`
        buckets.own,
        buckets.wide,
        buckets.client,
        None if claim is None else claim.school_id,
        None if claim is None else claim.user_id,
        buckets.device,
        throttle.WINDOW,
        throttle.ACCOUNT_LIMIT,
    )
    attempt = throttle.counted(
        buckets,
        known=user_id is not None,
        device=device,
        attempts=attempts,
        everywhere=everywhere,
        from_client=from_client,
    )
    if attempt.refused:
        raise DomainError(RATE_LIMITED)
    await throttle.slow_down(attempt)
    if user_id is None:
        # Verify against a dummy hash when the user is unknown, so timing does not reveal who exists.
        await verify_against_dummy_async(password)
        raise DomainError(INVALID)
    if not await verify_password_async(checked, password):
        raise DomainError(INVALID)
    rehashed = await hash_password_async(password) if needs_rehash(checked) else None
    token, token_hash = new_secret(SESSION_PREFIX)
    wide, shared_client = (*attempt.shared_keys, None, None)[:2]
    rows = await db.statement(
        _OPEN,
        school_id,
        user_id,
        checked,
        rehashed,
        token_hash,
        policy.lifetime,
        SignInMethod.PASSWORD.value,
        AuditAction.USER_SIGNED_IN.value,
        _SIGNED_IN_SUMMARY,
        attempt.own_key,
        wide,
        shared_client,
    )
    if not rows:
        raise DomainError(INVALID)
    return SignedIn(
        token=token,
        user=_user(rows[0]),
        device_cookie=issue_device_cookie(secret=secret, school_id=school_id, user_id=user_id, now=now),
    )


def _user(row: Mapping[str, Any]) -> User:
    """A user's row as a statement returned it, as the model: set as the ORM sets a row it loads (no event for
    each attribute), in no ORM session."""
    user: User = _USERS.new_instance()
    user.__dict__.update({key: row[key] for key in _USER_COLUMNS}, type=UserType(row["type"]))
    return user


_USERS = sa_inspect(User).class_manager
_USER_COLUMNS = tuple(attribute.key for attribute in sa_inspect(User).column_attrs)


# The session, the user's last sign-in time and its audit event in one statement, for an account that is still active (and, for a password
# sign-in, still has the hash that was checked).
_OPEN_SESSION = text("""
with opened as (
    insert into sessions (school_id, user_id, token_hash, expires_at, sign_in_method)
    select u.school_id, u.id, :token_hash, now() + :lifetime, :method
    from users u
    where u.school_id = :school_id and u.id = :user_id and u.deleted_at is null
      and u.password_hash = :password_hash
    returning school_id, user_id
), seen as (
    update users u set last_sign_in_at = now()
    from opened o where u.school_id = o.school_id and u.id = o.user_id
    returning u.last_sign_in_at
), recorded as (
    insert into audit_events (school_id, actor_id, actor_label, action, target_user_ids, summary)
    select school_id, user_id, :label, :action, array[user_id], cast(:summary as jsonb) from opened
    returning 1
)
select (select count(*) from recorded), (select last_sign_in_at from seen)
""")


async def open_session(
    session: AsyncSession,
    user: User,
    *,
    policy: SessionPolicy,
    how: SignInMethod,
    password_hash: str | None = None,
) -> SignedIn:
    """A new session for `user`, and its audit event; the answer for a wrong password when the account is no
    longer active or no longer has `password_hash` (its own hash when not given)."""
    token, token_hash = new_secret(SESSION_PREFIX)
    opened, signed_in_at = (
        await session.execute(
            _OPEN_SESSION,
            {
                "token_hash": token_hash,
                "lifetime": policy.lifetime,
                "method": how.value,
                "school_id": user.school_id,
                "user_id": user.id,
                "password_hash": user.password_hash if password_hash is None else password_hash,
                "label": user.username,
                "action": AuditAction.USER_SIGNED_IN.value,
                "summary": json.dumps({"method": how.value}),
            },
        )
    ).one()
    if not opened:
        raise DomainError(INVALID)
    # As the row now is, without making the loaded user dirty.
    set_committed_value(user, "last_sign_in_at", signed_in_at)
    return SignedIn(token=token, user=user)


async def check_new_password(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_type: UserType,
    is_admin: bool,
    new_password: str,
    confirm_password: str,
    user_id: uuid.UUID | None = None,
) -> None:
    """The two typed passwords match (case-sensitively) and follow the policy for this kind of user."""
    if new_password != confirm_password:
        raise DomainError(
            Problem(
                ErrorCode.PASSWORDS_DO_NOT_MATCH,
                "The two new passwords are not the same.",
                "confirmPassword",
                user_id,
            )
        )
    min_length = (
        await session.execute(select(School.pupil_min_password_length).where(School.id == school_id))
    ).scalar_one()
    staff = user_type == UserType.TEACHER or is_admin
    if problem := password_problem(new_password, staff=staff, pupil_min_length=min_length):
        raise DomainError(Problem(ErrorCode.PASSWORD_TOO_WEAK, problem, "newPassword", user_id))


async def set_own_password(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_id: uuid.UUID,
    session_id: uuid.UUID | None,
    new_password: str,
    confirm_password: str,
) -> User:
    """Replace the caller's password (already re-authenticated); their other sessions end."""
    user = (
        await session.execute(
            select(User).where(User.school_id == school_id, User.id == user_id).with_for_update()
        )
    ).scalar_one()
    await check_new_password(
        session,
        school_id=school_id,
        user_type=user.type,
        is_admin=user.is_admin,
        new_password=new_password,
        confirm_password=confirm_password,
    )
    await session.execute(
        update(User)
        .where(User.school_id == school_id, User.id == user_id)
        .values(
            password_hash=await hash_password_async(new_password),
            must_change_password=False,
            version=User.version + 1,
            updated_at=func.now(),
        )
    )
    await revoke_sessions(session, school_id=school_id, user_ids=[user_id], keep=session_id)
    await audit.record_by(
        session,
        Actor(id=user_id, label=user.username),
        school_id=school_id,
        action=AuditAction.USER_PASSWORD_CHANGED,
        targets=[user_id],
    )
    await session.refresh(user)
    return user
