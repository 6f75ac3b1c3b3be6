"""Throttling of sign-in attempts, counted in PostgreSQL so it holds across workers.

Every attempt is counted *before* the password is checked, each in its own committed statement, so
attempts packed into one request (aliases) or spread over workers all count.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text

from db.engine import Database

WINDOW = timedelta(minutes=15)
ACCOUNT_SLOW_AFTER = 3
ACCOUNT_LIMIT = 10
# One school's classroom shares one address; only its failures count, so the limit is generous.
CLIENT_LIMIT = 100
MAX_DELAY_SECONDS = 2.0

# Both counts in one statement (the account's row first, always, so two sign-ins never lock in opposite orders).
_COUNT = text("""
insert into sign_in_throttle as t (key, attempts, window_ends_at)
values (:account, 1, now() + :window), (:client, 1, now() + :window)
on conflict (key) do update set
    attempts = case when t.window_ends_at <= now() then 1 else t.attempts + 1 end,
    window_ends_at = case when t.window_ends_at <= now() then now() + :window else t.window_ends_at end
returning key, attempts
""")
# The account starts afresh, and the client's count forgets this attempt: one statement.
_SUCCEEDED = text("""
with cleared as (delete from sign_in_throttle where key = :account)
update sign_in_throttle set attempts = greatest(attempts - 1, 0) where key = :client
""")


def _key(kind: str, *parts: str) -> bytes:
    return hashlib.sha256("\x00".join((kind, *parts)).encode()).digest()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One counted attempt at signing in to an account from a client."""

    account_key: bytes
    client_key: bytes
    refused: bool
    delay: float


async def count_attempt(db: Database, *, account: str, client: str, account_limit: int = ACCOUNT_LIMIT,
                        client_limit: int = CLIENT_LIMIT) -> Attempt:
    """Count an attempt for `account` (e.g. "school-slug:username") from `client` (an address)."""
    account_key, client_key = _key("account", account.lower()), _key("client", client)
    # One statement commits by itself: no BEGIN and COMMIT around it.
    async with db.autocommit.connect() as connection:
        counted = {key: attempts for key, attempts in await connection.execute(_COUNT, {
            "account": account_key, "client": client_key, "window": WINDOW})}
    account_attempts, client_attempts = counted[account_key], counted[client_key]
    refused = account_attempts > account_limit or client_attempts > client_limit
    slow = max(0, account_attempts - ACCOUNT_SLOW_AFTER)
    delay = 0.0 if refused or slow == 0 else min(MAX_DELAY_SECONDS, 0.1 * 2 ** (slow - 1))
    return Attempt(account_key=account_key, client_key=client_key, refused=refused, delay=delay)


async def slow_down(attempt: Attempt) -> None:
    if attempt.delay:
        await asyncio.sleep(attempt.delay)


async def succeeded(db: Database, attempt: Attempt) -> None:
    """A correct password: the account starts afresh, and the client's count forgets this attempt."""
    async with db.autocommit.connect() as connection:
        await connection.execute(_SUCCEEDED, {"account": attempt.account_key, "client": attempt.client_key})
