"""Re-authentication: the caller types their own password again before a sensitive operation.

Each attempt is counted on the session *before* the password is checked, in a statement of its own, so a
rolled-back operation or many attempts packed into one request still count. Too many failures end the
session.
"""

from __future__ import annotations

from db.engine import Database
from db.errors import DomainError, ErrorCode, Problem
from db.passwords import verify_password_async
from tenants.callers import Caller, Person

MAX_FAILURES = 5
_ATTEMPT = "select * from rollcall_reauth_attempt($1, $2, $3)"
_RESULT = "select rollcall_reauth_result($1, $2, $3)"


async def reauthenticate(
    db: Database, caller: Caller, password: str, *, field: str = "currentPassword"
) -> None:
    """Return when `password` is the caller's own; otherwise raise REAUTH_FAILED (and maybe sign them out)."""
    if not isinstance(caller, Person):
        raise DomainError(
            Problem(ErrorCode.REAUTH_FAILED, "Only a signed-in person can confirm with a password.", field)
        )
    # One statement each (migration 0022), autocommitted: the attempt counted on the session with the hash to
    # check, then the outcome (the count cleared, or the session ended).
    rows = await db.statement(_ATTEMPT, caller.school_id, caller.session_id, caller.user_id)
    attempts, password_hash = rows[0] if rows else (None, "")
    if (
        attempts is not None
        and attempts <= MAX_FAILURES
        and await verify_password_async(password_hash, password)
    ):
        await db.statement(_RESULT, caller.school_id, caller.session_id, True)
        return
    signed_out = attempts is None or attempts >= MAX_FAILURES
    if signed_out:
        await db.statement(_RESULT, caller.school_id, caller.session_id, False)
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
