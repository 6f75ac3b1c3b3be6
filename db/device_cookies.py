"""Device cookies (OWASP's defence against lockout): a browser that has signed in as a user before carries a
signed value naming that user, and its sign-in attempts for that user count in a throttle bucket of their own
(db/throttle.py). Someone who fails on purpose elsewhere cannot keep the owner out of their own browser.

A device cookie is an HMAC-SHA256 signature over the school id, the user id, a random device id and when it
was issued, made with a key derived from the server secret under a label of its own (so no login code is ever
a device cookie, nor the other way round). It opens no session and proves no password: it only decides which
bucket an attempt is counted in, so it is never a secret worth more than a few guesses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

PREFIX = "RD1."
LIFETIME = timedelta(days=180)

_FORMAT = 1
_LABEL = b"rollcall-device-cookie\x00"
_TAG_BYTES = 16
_DEVICE_BYTES = 16
# format version, school id, user id, device id, issued at in unix seconds
_PAYLOAD = struct.Struct(">B16s16s16sQ")


def _tag(payload: bytes, secret: bytes) -> bytes:
    key = hmac.new(secret, _LABEL, hashlib.sha256).digest()
    return hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def issue_device_cookie(*, secret: bytes, school_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> str:
    """A new device cookie for a browser that has just signed in as this user."""
    payload = _PAYLOAD.pack(
        _FORMAT, school_id.bytes, user_id.bytes, secrets.token_bytes(_DEVICE_BYTES), int(now.timestamp())
    )
    return PREFIX + base64.urlsafe_b64encode(payload + _tag(payload, secret)).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class DeviceClaim:
    """What a genuine, unexpired device cookie says: the browser has signed in as this user before."""

    school_id: uuid.UUID
    user_id: uuid.UUID
    device: bytes


def device_claim(cookie: str | None, *, secret: bytes, now: datetime) -> DeviceClaim | None:
    """The user and device a genuine, unexpired cookie names; None for anything else."""
    if not cookie or not cookie.isascii() or not cookie.startswith(PREFIX):
        return None
    body = cookie[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _PAYLOAD.size + _TAG_BYTES:
        return None
    payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    if not hmac.compare_digest(tag, _tag(payload, secret)):
        return None
    fmt, school, user, device, issued = _PAYLOAD.unpack(payload)
    if fmt != _FORMAT:
        return None
    if not now.timestamp() - LIFETIME.total_seconds() <= issued <= now.timestamp() + 60:
        return None
    return DeviceClaim(uuid.UUID(bytes=school), uuid.UUID(bytes=user), bytes(device))


def trusted_device(
    cookie: str | None, *, secret: bytes, school_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> bytes | None:
    """The device id of a genuine, unexpired cookie naming this user; None for anything else."""
    claim = device_claim(cookie, secret=secret, now=now)
    if claim is None or claim.school_id != school_id or claim.user_id != user_id:
        return None
    return claim.device
