"""QR login codes: opaque, signed strings that say which pupil may sign in, until when.

A code is an HMAC-SHA256 signature, made with a server secret kept outside the database, over
the school id, the user id, the user's login-code version and an expiry. Signing rather than
storing random codes means:

- a card can be reprinted at any time with the same code, without a database write per card;
- checking a code costs no database round-trip before the sign-in throttle is consulted;
- rotation is a per-user version number in the database: bumping it kills every older card at once;
- nothing secret is in the database, so a database dump cannot mint cards.

The code carries ids only, never names, and is base32 so it fits QR alphanumeric mode and can be typed.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import os
import secrets
import struct
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

CODE_PREFIX = "RC1"
SECRET_BYTES = 32

_FORMAT = 1
_DOMAIN = b"rollcall-login-code\x00"
_TAG_BYTES = 16  # 128 bits
# format version, school id, user id, login-code version, expiry in unix seconds
_PAYLOAD = struct.Struct(">B16s16sIQ")
_RAW_BYTES = _PAYLOAD.size + _TAG_BYTES
_BODY_CHARS = -(-_RAW_BYTES * 8 // 5)
CODE_LENGTH = len(CODE_PREFIX) + _BODY_CHARS


@dataclass(frozen=True, slots=True)
class LoginCode:
    school_id: uuid.UUID
    user_id: uuid.UUID
    version: int
    expires_at: datetime

    def __post_init__(self) -> None:
        if not 1 <= self.version <= 0xFFFFFFFF:
            raise ValueError("A login-code version must be between 1 and 2**32 - 1.")
        if self.expires_at.utcoffset() != timedelta(0):
            raise ValueError("A login code's expiry must be a timezone-aware UTC datetime.")
        if self.expires_at.microsecond or self.expires_at.year < 1970:
            raise ValueError("A login code's expiry must be whole seconds after 1970.")


def _check_secret(secret: bytes) -> None:
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"The login-code secret must be at least {SECRET_BYTES} bytes.")


def _tag(payload: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _base32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def encode_login_code(code: LoginCode, *, secret: bytes) -> str:
    _check_secret(secret)
    payload = _PAYLOAD.pack(
        _FORMAT, code.school_id.bytes, code.user_id.bytes, code.version, int(code.expires_at.timestamp())
    )
    return CODE_PREFIX + _base32(payload + _tag(payload, secret))


def decode_login_code(text: str, *, secret: bytes, now: datetime) -> LoginCode | None:
    """Return the code's contents, or None when it is malformed, forged, tampered with or expired."""
    _check_secret(secret)
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime.")
    text = text.strip()
    if len(text) != CODE_LENGTH or not text.isascii():
        return None
    text = text.upper()
    if not text.startswith(CODE_PREFIX):
        return None
    body = text[len(CODE_PREFIX) :]
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except binascii.Error:
        return None
    # base32 ignores the spare bits of the last character; insist on the one spelling we issue.
    if len(raw) != _RAW_BYTES or _base32(raw) != body:
        return None
    payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    if not hmac.compare_digest(tag, _tag(payload, secret)):
        return None
    fmt, school, user, version, expires = _PAYLOAD.unpack(payload)
    if fmt != _FORMAT or version < 1 or expires <= now.timestamp():
        return None
    try:
        expires_at = datetime.fromtimestamp(expires, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return LoginCode(
        school_id=uuid.UUID(bytes=school),
        user_id=uuid.UUID(bytes=user),
        version=version,
        expires_at=expires_at,
    )


def secret_from_env(value: str) -> bytes:
    """Parse a hex secret from a setting. The message never repeats the value: it is a secret."""
    try:
        secret = bytes.fromhex(value.strip())
    except ValueError:
        raise ValueError("The login-code secret must be written in hexadecimal.") from None
    if len(secret) < SECRET_BYTES:
        raise ValueError(
            f"The login-code secret must be at least {SECRET_BYTES} bytes "
            f"({2 * SECRET_BYTES} hex digits); it has {len(secret)}."
        )
    return secret


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret at `path`, creating it (mode 0600) when it does not exist yet."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_bytes(SECRET_BYTES).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        # A hard link, unlike os.replace, never overwrites: when another process got there first,
        # everyone uses its secret, so no worker signs cards with a secret that is not on disk.
        try:
            os.link(temp_name, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temp_name)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    text = path.read_text(encoding="ascii")
    try:
        return secret_from_env(text)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def default_expiry(today: date, *, school_year_ends: tuple[int, int] = (8, 31)) -> datetime:
    """The last second (UTC) of the school year: the next `school_year_ends` (month, day) on or after today."""
    month, day = school_year_ends
    if not is_day_of_year(month, day):
        raise ValueError(f"Month {month}, day {day} is not a day of the year.")
    end = _clamped_date(today.year, month, day)
    if end < today:
        end = _clamped_date(today.year + 1, month, day)
    return datetime.combine(end, time(23, 59, 59), UTC)


def is_day_of_year(month: int, day: int) -> bool:
    """A day some year has: 29 February counts (in other years it falls back to the 28th)."""
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(2000, month)[1]


def _clamped_date(year: int, month: int, day: int) -> date:
    # 29 February falls back to the 28th in years that lack it.
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))
