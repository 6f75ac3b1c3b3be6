"""API tokens: read-only ones that third-party apps use to read a school's roster, and provisioning ones that
a managed school's provider uses to keep its users and classes up to date over SCIM."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import audit
from db.audit import Actor, AuditAction
from db.errors import DomainError, ErrorCode, Problem
from db.models import ApiToken, Provider, School
from db.names import TOKEN_NAME_MAX
from db.sessions import API_TOKEN_PREFIX, new_secret
from db.users import CONTROL_CHARACTERS


class ApiScope(enum.StrEnum):
    ROSTER_READ = "ROSTER_READ"
    # SCIM at /scim/v2 only, and nothing else: such a token has this scope alone.
    PROVISION = "PROVISION"


async def create_api_token(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    actor: Actor,
    name: str,
    scopes: Sequence[ApiScope],
) -> tuple[str, ApiToken]:
    """Issue a token; its secret is returned this once and only its hash is kept."""
    name = " ".join(name.split())
    if not name or len(name) > TOKEN_NAME_MAX:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, f"A token's name is 1 to {TOKEN_NAME_MAX} characters.", "name")
        )
    if CONTROL_CHARACTERS.search(name):
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, "A token's name cannot contain control characters.", "name")
        )
    if not scopes:
        raise DomainError(Problem(ErrorCode.INVALID_INPUT, "Choose at least one scope.", "scopes"))
    if ApiScope.PROVISION in scopes:
        await _require_provisioning(session, school_id, scopes)
    secret, token_hash = new_secret(API_TOKEN_PREFIX)
    token = ApiToken(
        school_id=school_id,
        name=name,
        token_hash=token_hash,
        scopes=sorted({scope.value for scope in scopes}),
        created_by=actor.id,
    )
    session.add(token)
    await session.flush()
    await audit.record_by(
        session,
        actor,
        school_id=school_id,
        action=AuditAction.API_TOKEN_CREATED,
        summary={"token_id": str(token.id), "name": name, "scopes": token.scopes},
    )
    await session.refresh(token)
    return secret, token


async def _require_provisioning(
    session: AsyncSession, school_id: uuid.UUID, scopes: Sequence[ApiScope]
) -> None:
    if set(scopes) != {ApiScope.PROVISION}:
        raise DomainError(
            Problem(ErrorCode.INVALID_INPUT, "A provisioning token has the PROVISION scope alone.", "scopes")
        )
    if (await session.get_one(School, school_id)).provider == Provider.MANUAL:
        raise DomainError(
            Problem(
                ErrorCode.INVALID_INPUT,
                "This school's users are managed here, by hand; provisioning tokens are "
                "for schools whose users come from a provider.",
                "scopes",
            )
        )


async def revoke_api_token(
    session: AsyncSession, *, school_id: uuid.UUID, token_id: uuid.UUID, actor: Actor
) -> ApiToken:
    token = (
        await session.execute(
            select(ApiToken).where(ApiToken.school_id == school_id, ApiToken.id == token_id)
        )
    ).scalar_one_or_none()
    if token is None:
        raise DomainError(Problem(ErrorCode.NOT_FOUND, f"No API token has the id {token_id}.", "id"))
    if token.revoked_at is None:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.school_id == school_id, ApiToken.id == token_id)
            .values(revoked_at=func.now())
        )
        await audit.record_by(
            session,
            actor,
            school_id=school_id,
            action=AuditAction.API_TOKEN_REVOKED,
            summary={"token_id": str(token_id), "name": token.name},
        )
        await session.refresh(token)
    return token


async def list_api_tokens(session: AsyncSession, *, school_id: uuid.UUID) -> Sequence[ApiToken]:
    return (
        (
            await session.execute(
                select(ApiToken)
                .where(ApiToken.school_id == school_id)
                .order_by(ApiToken.created_at, ApiToken.id)
            )
        )
        .scalars()
        .all()
    )
