"""Resolving the caller from a bearer secret: which school, which user, what they may do."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select

from db.engine import Database
from db.models import Session, UserType
from db.sessions import SESSION_PREFIX, SessionPolicy, active_session, hash_secret
from tenants.scope import bind_school, bind_token_hash, unbound_scope


class CallerKind(enum.StrEnum):
    SESSION = "SESSION"
    API_TOKEN = "API_TOKEN"


@dataclass(frozen=True, slots=True)
class Caller:
    school_id: uuid.UUID
    kind: CallerKind
    user_id: uuid.UUID | None = None
    user_type: UserType | None = None
    is_admin: bool = False
    must_change_password: bool = False
    session_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        return f"user:{self.user_id}" if self.user_id else f"api-token:{self.token_id}"


async def caller_for_secret(db: Database, secret: str, policy: SessionPolicy) -> Caller | None:
    """The caller a bearer secret stands for, or None when it is unknown, expired or revoked."""
    if not secret.startswith(SESSION_PREFIX):
        return None
    token_hash = hash_secret(secret)
    async with unbound_scope(db) as session:
        await bind_token_hash(session, token_hash)
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
            school_id=school_id, kind=CallerKind.SESSION, user_id=user.id, user_type=user.type,
            is_admin=user.is_admin, must_change_password=user.must_change_password, session_id=row.id,
        )
