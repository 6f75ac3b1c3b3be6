"""OAuth 2.0 client credentials (RFC 6749 section 4.4) for OneRoster: an API token with the ROSTER_READ scope is
a client (its id is the client id, its secret the client secret), exchanged for a short-lived access token.

Only the access token's SHA-256 is stored, with the scopes it was granted. `rollcall_caller` (migration 0019)
finds it in the same one statement as every other bearer secret, and only while its client is not revoked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import OAuthAccessToken
from db.sessions import ACCESS_TOKEN_PREFIX, new_secret

ONEROSTER_SCOPE_BASE = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
ROSTER_CORE_READONLY = ONEROSTER_SCOPE_BASE + "roster-core.readonly"
ROSTER_READONLY = ONEROSTER_SCOPE_BASE + "roster.readonly"
# What a ROSTER_READ client may be granted: the roster without demographics, and the roster with them (there
# are no demographics here, so both read the same).
ROSTER_SCOPES = (ROSTER_CORE_READONLY, ROSTER_READONLY)
ACCESS_TOKEN_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AccessToken:
    secret: str
    scopes: tuple[str, ...]
    expires_in: int
    expires_at: datetime


def granted_scopes(requested: str | None) -> tuple[str, ...]:
    """The scopes granted for a request's `scope` (space-separated, RFC 6749 section 3.3): those asked for that
    a roster client may have, in the order asked; every roster scope when none is asked for. Scopes it may not
    have (a gradebook's, say) are left out, not refused."""
    if requested is None or not requested.strip():
        return ROSTER_SCOPES
    asked: Iterable[str] = requested.split()
    return tuple(dict.fromkeys(scope for scope in asked if scope in ROSTER_SCOPES))


async def issue_access_token(
    session: AsyncSession,
    *,
    school_id: uuid.UUID,
    client_id: uuid.UUID,
    scopes: tuple[str, ...],
    lifetime: timedelta = ACCESS_TOKEN_LIFETIME,
) -> AccessToken:
    """A new access token for the client; the client's expired ones are removed in the same transaction, so the
    table keeps only live tokens."""
    await session.execute(
        delete(OAuthAccessToken).where(
            OAuthAccessToken.school_id == school_id,
            OAuthAccessToken.client_id == client_id,
            OAuthAccessToken.expires_at <= func.now(),
        )
    )
    secret, token_hash = new_secret(ACCESS_TOKEN_PREFIX)
    row = OAuthAccessToken(
        school_id=school_id,
        client_id=client_id,
        token_hash=token_hash,
        scopes=list(scopes),
        expires_at=func.now() + lifetime,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row, ["expires_at"])
    return AccessToken(
        secret=secret,
        scopes=scopes,
        expires_in=int(lifetime.total_seconds()),
        expires_at=row.expires_at,
    )
