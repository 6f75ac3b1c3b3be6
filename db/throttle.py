"""Throttling of sign-in attempts, counted in PostgreSQL so it holds across workers.

Every attempt is counted *before* the password is checked, each in its own committed statement, so
attempts packed into one request (aliases) or spread over workers all count.

No one may keep an account's owner out by failing on purpose, so an attempt counts in several buckets:

- the account from this address (ACCOUNT_LIMIT): guessing from one place stops there, while the owner
  signing in from anywhere else is untouched;
- the account from everywhere (ACCOUNT_WIDE_LIMIT, ten times higher): slows guessing spread over many
  addresses, then stops it;
- the address, where each account failing from it counts once (CLIENT_LIMIT): a school behind one address
  (its NAT) is not refused for one pupil's mistakes, yet one address cannot go through the whole school;
- a trusted browser (a device cookie for the account, db/device_cookies.py) counts only in its own bucket,
  so the owner's own browser still gets in while the account is under attack from anywhere, even behind the
  attacker's address.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from db.engine import Database

WINDOW = timedelta(minutes=15)
ACCOUNT_SLOW_AFTER = 3
ACCOUNT_LIMIT = 10
ACCOUNT_WIDE_SLOW_AFTER = 30
ACCOUNT_WIDE_LIMIT = 100
# Different accounts failing from one address: a school's classrooms share one, so the limit is generous.
CLIENT_LIMIT = 100
MAX_DELAY_SECONDS = 2.0

_COUNT = text("""
insert into sign_in_throttle as t (key, attempts, window_ends_at)
values (:key, 1, now() + :window)
on conflict (key) do update set
    attempts = case when t.window_ends_at <= now() then 1 else t.attempts + 1 end,
    window_ends_at = case when t.window_ends_at <= now() then now() + :window else t.window_ends_at end
returning attempts
""")
_PEEK = text("select attempts from sign_in_throttle where key = :key and window_ends_at > now()")
_FORGIVE = text("update sign_in_throttle set attempts = greatest(attempts - 1, 0) where key = :key")
_CLEAR = text("delete from sign_in_throttle where key = :key")


def _key(kind: str, *parts: str) -> bytes:
    return hashlib.sha256("\x00".join((kind, *parts)).encode()).digest()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One counted attempt at signing in to an account: the bucket it counted in, and the shared counts it
    added to, which a correct password forgives."""

    own_key: bytes
    shared_keys: tuple[bytes, ...]
    refused: bool
    delay: float


async def _count(connection: AsyncConnection, key: bytes) -> int:
    attempts: int = (await connection.execute(_COUNT, {"key": key, "window": WINDOW})).scalar_one()
    return attempts


def _delay(slow: int) -> float:
    return 0.0 if slow <= 0 else min(MAX_DELAY_SECONDS, 0.1 * 2 ** (slow - 1))


async def count_attempt(
    db: Database,
    *,
    account: str,
    client: str,
    device: bytes | None = None,
    account_limit: int = ACCOUNT_LIMIT,
    account_wide_limit: int = ACCOUNT_WIDE_LIMIT,
    client_limit: int = CLIENT_LIMIT,
) -> Attempt:
    """Count an attempt for `account` (e.g. "school-slug:username") from `client` (an address), or from the
    trusted browser `device` (the id in a genuine device cookie for this account)."""
    account = account.lower()
    async with db.engine.begin() as connection:
        if device is not None:
            own_key = _key("device", account, device.hex())
            attempts = await _count(connection, own_key)
            return Attempt(
                own_key=own_key,
                shared_keys=(),
                refused=attempts > account_limit,
                delay=0.0 if attempts > account_limit else _delay(attempts - ACCOUNT_SLOW_AFTER),
            )
        own_key, wide_key = _key("account-client", account, client), _key("account", account)
        client_key = _key("client", client)
        attempts = await _count(connection, own_key)
        everywhere = await _count(connection, wide_key)
        # An account counts once for its address, at its first attempt from there in the window.
        accounts_from_client = (
            await _count(connection, client_key)
            if attempts == 1
            else (await connection.execute(_PEEK, {"key": client_key})).scalar_one_or_none() or 0
        )
    refused = (
        attempts > account_limit or everywhere > account_wide_limit or accounts_from_client > client_limit
    )
    slow = max(attempts - ACCOUNT_SLOW_AFTER, everywhere - ACCOUNT_WIDE_SLOW_AFTER)
    delay = 0.0 if refused else _delay(slow)
    return Attempt(own_key=own_key, shared_keys=(wide_key, client_key), refused=refused, delay=delay)


async def slow_down(attempt: Attempt) -> None:
    if attempt.delay:
        await asyncio.sleep(attempt.delay)


async def succeeded(db: Database, attempt: Attempt) -> None:
    """A correct password: its own bucket starts afresh, and the shared counts forget this attempt."""
    async with db.engine.begin() as connection:
        await connection.execute(_CLEAR, {"key": attempt.own_key})
        for key in attempt.shared_keys:
            await connection.execute(_FORGIVE, {"key": key})
