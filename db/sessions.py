"""Sign-in sessions and bearer secrets. Only SHA-256 hashes of secrets are stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Session, SignInMethod

SESSION_PREFIX = "rcs_"
API_TOKEN_PREFIX = "rca_"
# A short-lived OAuth 2.0 access token for OneRoster, issued to an API token (db/oauth.py).
ACCESS_TOKEN_PREFIX = "rco_"
# Every bearer secret Rollcall issues starts with one of these (provisioning tokens are API tokens).
BEARER_PREFIXES = (SESSION_PREFIX, API_TOKEN_PREFIX, ACCESS_TOKEN_PREFIX)
# Seen-at is refreshed at most this often, so reading a page does not write a row every time.
TOUCH_EVERY = timedelta(minutes=1)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret(prefix: str) -> tuple[str, bytes]:
    """A fresh bearer secret (256 random bits) and the hash that is stored in its place."""
    secret = prefix + secrets.token_urlsafe(32)
    return secret, hash_secret(secret)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta
    lifetime: timedelta


async def start_session(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_id: uuid.UUID,
    policy: SessionPolicy,
    method: SignInMethod = SignInMethod.PASSWORD,
) -> tuple[str, Session]:
    token, token_hash = new_secret(SESSION_PREFIX)
    row = Session(
        school_id=school_id,
        user_id=user_id,
        token_hash=token_hash,
        expires_at=func.now() + policy.lifetime,
        sign_in_method=method,
    )
    session.add(row)
    await session.flush()
    return token, row


async def revoke_sessions(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    user_ids: list[uuid.UUID],
    keep: uuid.UUID | None = None,
    method: SignInMethod | None = None,
) -> None:
    """End the users' live sessions (all but `keep`; only those opened by `method`, when given)."""
    query = update(Session).where(
        Session.school_id == school_id, Session.user_id.in_(user_ids), Session.revoked_at.is_(None)
    )
    if keep is not None:
        query = query.where(Session.id != keep)
    if method is not None:
        query = query.where(Session.sign_in_method == method)
    await session.execute(query.values(revoked_at=func.now()))


async def revoke_session(
    session: AsyncSession, *, school_id: uuid.UUID, session_id: uuid.UUID | None
) -> None:
    await session.execute(
        update(Session)
        .where(Session.school_id == school_id, Session.id == session_id)
        .values(revoked_at=func.now())
    )
