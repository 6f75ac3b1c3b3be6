"""The passwords typed into an uploaded roster file, sealed while the preview waits for its confirmation.

AES-256-GCM, under a key derived (HKDF-SHA256, with a label of its own) from the server secret, which is
kept out of the database; the key is not the one that signs login codes. The job's school and id are the
associated data, so a sealed box copied onto another job, or altered, does not open.
"""

from __future__ import annotations

import json
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"rollcall import-job passwords v1"
NONCE_BYTES = 12


class SealBroken(Exception):
    """The box does not open: the server secret changed, or the stored bytes were altered or moved."""


def _cipher(server_secret: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL).derive(server_secret))


def _bound_to(school_id: uuid.UUID, job_id: uuid.UUID) -> bytes:
    return f"{school_id}/{job_id}".encode()


def seal(
    passwords: dict[str, str], *, server_secret: bytes, school_id: uuid.UUID, job_id: uuid.UUID
) -> bytes:
    """The passwords (by row number) as a nonce followed by the ciphertext and its tag."""
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(passwords, separators=(",", ":")).encode()
    return nonce + _cipher(server_secret).encrypt(nonce, plain, _bound_to(school_id, job_id))


def unseal(sealed: bytes, *, server_secret: bytes, school_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, str]:
    try:
        plain = _cipher(server_secret).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _bound_to(school_id, job_id)
        )
    except (InvalidTag, ValueError):
        raise SealBroken from None
    passwords: dict[str, str] = json.loads(plain)
    return passwords
