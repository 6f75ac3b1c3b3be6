"""Re-authentication: the caller types their own password again before a sensitive operation.

Each attempt is counted on the session *before* the password is checked, in its own transaction, so a
rolled-back operation or many attempts packed into one request still count. Too many failures end the
session.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem
from db.models import Session, User
from db.passwords import verify_password_async
from db.scope import school_scope
from tenants.callers import Caller, Person

MAX_FAILURES = 5


async def reauthenticate(
    db: Database, caller: Caller, password: str, *, field: str = "currentPassword"
) -> None:
    """Return when `password` is the caller's own; otherwise raise REAUTH_FAILED (and maybe sign them out)."""
    if not isinstance(caller, Person):
        raise DomainError(
            Problem(ErrorCode.REAUTH_FAILED, "Only a signed-in person can confirm with a password.", field)
        )
    where = (Session.school_id == caller.school_id, Session.id == caller.session_id)
    async with school_scope(db, caller.school_id) as session:
        attempts = (
            await session.execute(
                update(Session)
                .where(*where, Session.revoked_at.is_(None))
                .values(reauth_failures=Session.reauth_failures + 1)
                .returning(Session.reauth_failures)
            )
        ).scalar_one_or_none()
        password_hash = (
            await session.execute(
                select(User.password_hash).where(
                    User.school_id == caller.school_id, User.id == caller.user_id
                )
            )
        ).scalar_one()
    if (
        attempts is not None
        and attempts <= MAX_FAILURES
        and await verify_password_async(password_hash, password)
    ):
        async with school_scope(db, caller.school_id) as session:
            await session.execute(update(Session).where(*where).values(reauth_failures=0))
        return
    signed_out = attempts is None or attempts >= MAX_FAILURES
    if signed_out:
        async with school_scope(db, caller.school_id) as session:
            await session.execute(
                update(Session).where(*where, Session.revoked_at.is_(None)).values(revoked_at=func.now())
            )
    remaining = 0 if signed_out or attempts is None else MAX_FAILURES - attempts
    raise DomainError(
        Problem(
            ErrorCode.REAUTH_FAILED,
            "Your password is not right. You have been signed out; sign in again."
            if signed_out
            else f"Your password is not right. {remaining} more "
            f"{'try' if remaining == 1 else 'tries'} and you will be signed out.",
            field,
            attempts_remaining=remaining,
        )
    )
