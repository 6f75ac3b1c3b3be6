"""Throttling of sign-in attempts, counted in PostgreSQL so it holds across workers.

Every attempt is counted *before* the password is checked, in one autocommitted statement, so attempts packed
into one request (aliases) or spread over workers all count.

No one may keep an account's owner out by failing on purpose, so an attempt counts in several buckets:

- the account from this address (ACCOUNT_LIMIT): guessing from one place stops there, while the owner
  signing in from anywhere else is untouched;
- the account from everywhere (ACCOUNT_WIDE_LIMIT, ten times higher): slows guessing spread over many
  addresses, then stops it. An attempt its own (account, address) bucket refuses does not count here: each
  address adds at most ACCOUNT_LIMIT, so one address, however many attempts it packs into its requests,
  cannot fill this bucket and keep the owner out from everywhere else;
- the address, where each existing account failing from it counts once (CLIENT_LIMIT): a school behind one
  address (its NAT) is not refused for one pupil's mistakes, yet one address cannot go through the whole
  school. A name that is no account does not count there, so made-up names cannot use the address up and
  keep out everyone behind it; once the address is refused, every attempt from it is, whatever the name.
  It needs no cap of its own: only an account's first attempt from the address (in its window) counts
  there, and a first attempt is never one its own bucket refuses;
- a trusted browser (a device cookie for the account, db/device_cookies.py) counts only in its own bucket,
  so the owner's own browser still gets in while the account is under attack from anywhere, even behind the
  attacker's address.

What many addresses can still do: the account-wide bucket is there to stop guessing spread over addresses,
so it also refuses the owner. With ACCOUNT_WIDE_LIMIT // ACCOUNT_LIMIT + 1 addresses (11) making their
ACCOUNT_LIMIT attempts each, an attacker refuses the account from every address without a device cookie
for the rest of that 15-minute window, and keeps it so by doing the same in every window (then about 400
guesses an hour against the account, each costing the server one argon2 check). The owner's browsers that
signed in before still get in; a browser the owner never used waits. Addresses are counted as the server
sees them (behind ROLLCALL_TRUSTED_PROXIES, the forwarded one), so one host holding a block of IPv6
addresses has as many addresses as it cares to use.

The first two buckets are keyed by the name as typed, whether it is an account or not, so an unknown name is
throttled exactly as an existing one and its answers (and their timing) tell nothing. Unknown names are
deliberately not given a bucket of their own that refuses them: a name refused while real ones are still
let through would say which names exist. What the address bucket can tell is when it fills up, that is, at
most that one attempt was the limit's worth of existing accounts from that address in the window.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import timedelta

from db.engine import Database

WINDOW = timedelta(minutes=15)
ACCOUNT_SLOW_AFTER = 3
ACCOUNT_LIMIT = 10
ACCOUNT_WIDE_SLOW_AFTER = 30
ACCOUNT_WIDE_LIMIT = 100
# Different accounts failing from one address: a school's classrooms share one, so the limit is generous.
CLIENT_LIMIT = 100
MAX_DELAY_SECONDS = 2.0

# An attempt counted in its buckets, one statement (migration 0022's `rollcall_count_attempt`; the buckets as
# above): the account from this address; the account everywhere, unless this address has used up its own limit
# for the account (so one address adds at most that many there); and, at the account's first attempt from this
# address in the window (and only for an existing account), the address. A count this attempt does not add to
# is read as it stood before the statement. A trusted browser's attempt counts in its own bucket alone.
_COUNT = "select * from rollcall_count_attempt($1, $2, $3, $4, $5, $6, $7)"
# A correct password: its own bucket starts afresh and the shared ones forget one attempt, in one statement.
# The shared keys are bound one by one, not as an array: asyncpg looks an array type up (a few statements of
# its own) the first time a connection meets it, and behind a transaction-mode pooler those statements of an
# autocommitted one can land on different server connections and leave a setting changed on one.
_FORGIVE = """
with cleared as (delete from sign_in_throttle where key = $1)
update sign_in_throttle set attempts = greatest(attempts - 1, 0) where key = $2 or key = $3
"""


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


def _delay(slow: int) -> float:
    return 0.0 if slow <= 0 else min(MAX_DELAY_SECONDS, 0.1 * 2 ** (slow - 1))


@dataclass(frozen=True, slots=True)
class Keys:
    """The buckets an attempt at `account` from `client` may count in; `device`, a trusted browser's own."""

    own: bytes
    wide: bytes
    client: bytes
    device: bytes | None


def keys(account: str, client: str, device: bytes | None = None) -> Keys:
    account = account.lower()
    return Keys(
        own=_key("account-client", account, client),
        wide=_key("account", account),
        client=_key("client", client),
        device=None if device is None else _key("device", account, device.hex()),
    )


def counted(
    buckets: Keys,
    *,
    known: bool,
    device: bool,
    attempts: int,
    everywhere: int,
    from_client: int,
    account_limit: int = ACCOUNT_LIMIT,
    account_wide_limit: int = ACCOUNT_WIDE_LIMIT,
    client_limit: int = CLIENT_LIMIT,
) -> Attempt:
    """The attempt as its buckets counted it (`device`: in the trusted browser's own bucket alone)."""
    if device:
        assert buckets.device is not None
        return Attempt(
            own_key=buckets.device,
            shared_keys=(),
            refused=attempts > account_limit,
            delay=0.0 if attempts > account_limit else _delay(attempts - ACCOUNT_SLOW_AFTER),
        )
    refused = attempts > account_limit or everywhere > account_wide_limit or from_client > client_limit
    slow = max(attempts - ACCOUNT_SLOW_AFTER, everywhere - ACCOUNT_WIDE_SLOW_AFTER)
    shared_keys = (buckets.wide, buckets.client) if known else (buckets.wide,)
    return Attempt(
        own_key=buckets.own, shared_keys=shared_keys, refused=refused, delay=0.0 if refused else _delay(slow)
    )


async def count_attempt(
    db: Database,
    *,
    account: str,
    client: str,
    known: bool,
    device: bytes | None = None,
    account_limit: int = ACCOUNT_LIMIT,
    account_wide_limit: int = ACCOUNT_WIDE_LIMIT,
    client_limit: int = CLIENT_LIMIT,
) -> Attempt:
    """Count an attempt for `account` (e.g. "school-slug:username") from `client` (an address), or from the
    trusted browser `device` (the id in a genuine device cookie for this account). `known` says whether the
    account exists: only existing accounts count towards the address's limit."""
    buckets = keys(account, client, device)
    trusted = buckets.device is not None
    ((attempts, everywhere, from_client),) = await db.statement(
        _COUNT,
        buckets.device if buckets.device is not None else buckets.own,
        buckets.wide,
        buckets.client,
        known,
        trusted,
        WINDOW,
        account_limit,
    )
    return counted(
        buckets,
        known=known,
        device=trusted,
        attempts=attempts,
        everywhere=everywhere,
        from_client=from_client,
        account_limit=account_limit,
        account_wide_limit=account_wide_limit,
        client_limit=client_limit,
    )


async def slow_down(attempt: Attempt) -> None:
    if attempt.delay:
        await asyncio.sleep(attempt.delay)


async def succeeded(db: Database, attempt: Attempt) -> None:
    """A correct password: its own bucket starts afresh, and the shared counts forget this attempt."""
    wide, client = (*attempt.shared_keys, None, None)[:2]
    await db.statement(_FORGIVE, attempt.own_key, wide, client)
