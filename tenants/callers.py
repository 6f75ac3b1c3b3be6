"""Resolving the caller from a bearer secret: which school, which person or app, what they may do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from db.api_tokens import ApiScope
from db.engine import Database, retry_if_disconnected
from db.models import UserType
from db.sessions import BEARER_PREFIXES, TOUCH_EVERY, SessionPolicy, hash_secret

# Checks the token, its expiry, idle time, revocation and the user, every time: nothing is cached, so a
# logout, a deleted user or a revoked token ends access on the very next request, on every worker.
_CALLER = "select * from rollcall_caller($1, $2, $3)"
# The same, and whether the lookup wrote (moved the seen-at clock): only then does its transaction hold a row
# lock. The function runs to its end before the outer select reads its rows, so the answer is final.
_CALLER_WROTE = (
    "select c.*, pg_current_xact_id_if_assigned() is not null as wrote from rollcall_caller($1, $2, $3) c"
)


@dataclass(frozen=True, slots=True)
class Person:
    """Someone signed in with a session: a pupil, a teacher or a school admin."""

    school_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    username: str
    user_type: UserType
    is_admin: bool = False
    must_change_password: bool = False

    @property
    def label(self) -> str:
        """How the audit log names this person."""
        return self.username


@dataclass(frozen=True, slots=True)
class App:
    """An app with an API token: a read-only roster token, or the school provider's provisioning token; or an
    app with an OAuth access token (`access_token`) issued to its API token, whose scopes are the OneRoster
    scopes it was granted (db/oauth.py)."""

    school_id: uuid.UUID
    token_id: uuid.UUID
    scopes: frozenset[str]
    access_token: bool = False

    @property
    def provisions(self) -> bool:
        return ApiScope.PROVISION in self.scopes

    @property
    def label(self) -> str:
        """How the audit log names this app."""
        return f"{'provisioning' if self.provisions else 'api'}-token:{self.token_id}"


Caller = Person | App


async def resolve_caller(connection: AsyncConnection, secret: str, policy: SessionPolicy) -> Caller | None:
    """The caller a bearer secret stands for, or None when it is unknown, expired or revoked, in ONE round trip
    (db migration 0011's `rollcall_caller`). On a connection in a transaction, the caller's school is bound
    to that transaction too, so the request's own work can follow on the same connection."""
    if not secret.startswith(BEARER_PREFIXES):
        return None
    row = (await connection.exec_driver_sql(_CALLER, (hash_secret(secret), policy.idle, TOUCH_EVERY))).first()
    return None if row is None else _caller(row)


def _caller(row: Row[Any]) -> Caller:
    if row.kind in ("API_TOKEN", "OAUTH"):
        return App(
            school_id=row.school_id,
            token_id=row.token_id,
            scopes=frozenset(row.scopes),
            access_token=row.kind == "OAUTH",
        )
    return Person(
        school_id=row.school_id,
        user_id=row.user_id,
        session_id=row.session_id,
        username=row.username,
        user_type=UserType(row.user_type),
        is_admin=row.is_admin,
        must_change_password=row.must_change_password,
    )


async def caller_for_secret(db: Database, secret: str, policy: SessionPolicy) -> Caller | None:
    """The caller a bearer secret stands for, on a connection of its own: one statement, no transaction
    around it (it commits by itself)."""

    async def look_up() -> Caller | None:
        async with db.autocommit.connect() as connection:
            return await resolve_caller(connection, secret, policy)

    return await retry_if_disconnected(look_up)


async def caller_and_transaction(
    db: Database, secret: str, policy: SessionPolicy
) -> tuple[Caller | None, AsyncSession | None]:
    """The caller a bearer secret stands for and, when found, the transaction it was found in: still open,
    with the caller's school bound, for the request's own first transaction (db.scope.SchoolTransactions).
    The same one statement as `caller_for_secret`, checked as afresh on every request. When the lookup
    wrote (it moved the seen-at clock, at most once every TOUCH_EVERY) it commits at once instead, so that
    no row lock of the caller's is held while the request works, and the transaction is None."""
    if not secret.startswith(BEARER_PREFIXES):
        return None, None

    async def look_up() -> tuple[Caller | None, AsyncSession | None]:
        session = db.sessionmaker()
        try:
            await session.begin()
            connection = await session.connection()
            row = (
                await connection.exec_driver_sql(
                    _CALLER_WROTE, (hash_secret(secret), policy.idle, TOUCH_EVERY)
                )
            ).first()
            if row is None or row.wrote:
                await session.commit()
                await session.close()
                return (None if row is None else _caller(row)), None
            return _caller(row), session
        except BaseException:
            await session.close()
            raise

    return await retry_if_disconnected(look_up)
