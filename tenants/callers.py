"""Resolving the caller from a bearer secret: which school, which user or app, what they may do."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.engine import Database
from db.models import ApiToken, Session, UserType
from db.sessions import (
    API_TOKEN_PREFIX,
    SESSION_PREFIX,
    TOUCH_EVERY,
    SessionPolicy,
    active_session,
    hash_secret,
)
from tenants.scope import bind_school, bind_token_hash, unbound_scope


class CallerKind(enum.StrEnum):
    SESSION = "SESSION"
    API_TOKEN = "API_TOKEN"


@dataclass(frozen=True, slots=True)
class Caller:
    school_id: uuid.UUID
    kind: CallerKind
    user_id: uuid.UUID | None = None
    username: str = ""
    user_type: UserType | None = None
    is_admin: bool = False
    must_change_password: bool = False
    session_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        """How the audit log names this caller."""
        return self.username if self.kind == CallerKind.SESSION else f"api-token:{self.token_id}"


async def caller_for_secret(db: Database, secret: str, policy: SessionPolicy) -> Caller | None:
    """The caller a bearer secret stands for, or None when it is unknown, expired or revoked."""
    if not secret.startswith((SESSION_PREFIX, API_TOKEN_PREFIX)):
        return None
    token_hash = hash_secret(secret)
    async with unbound_scope(db) as session:
        await bind_token_hash(session, token_hash)
        if secret.startswith(API_TOKEN_PREFIX):
            return await _api_token_caller(session, token_hash)
        school_id = (await session.execute(
            select(Session.school_id).where(Session.token_hash == token_hash)
        )).scalar_one_or_none()
        if school_id is None:
            return None
        await bind_school(session, school_id)
        found = await active_session(session, school_id=school_id, token_hash=token_hash, policy=policy)
        if found is None:
            return None
        row, user = found
        return Caller(
            school_id=school_id, kind=CallerKind.SESSION, user_id=user.id, username=user.username,
            user_type=user.type, is_admin=user.is_admin, must_change_password=user.must_change_password,
            session_id=row.id,
        )


async def _api_token_caller(session: AsyncSession, token_hash: bytes) -> Caller | None:
    token = (await session.execute(
        select(ApiToken).where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
    )).scalar_one_or_none()
    if token is None:
        return None
    await bind_school(session, token.school_id)
    now = (await session.execute(select(func.now()))).scalar_one()
    if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
        await session.execute(update(ApiToken).where(ApiToken.school_id == token.school_id, ApiToken.id == token.id)
                              .values(last_used_at=now))
    return Caller(school_id=token.school_id, kind=CallerKind.API_TOKEN, token_id=token.id,
                  scopes=frozenset(token.scopes))
