"""Password hashing with scrypt (memory-hard): hashed, never encrypted, never logged.

Stored form: ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost can
rise later and old hashes still verify. Hashing takes tens of milliseconds of
CPU by design: callers run it in a worker thread, off the event loop.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# OWASP's scrypt floor (N=2^14, r=8, p=5): 16 MiB and ~140 ms of CPU here per hash.
LOG2_N, R, P = 14, 8, 5
_LEN = 32
MAX_PASSWORD_BYTES = 1024  # a KDF over megabytes is a denial of service
MIN_PASSWORD_CHARS = 10


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = Scrypt(salt=salt, length=_LEN, n=2**LOG2_N, r=R, p=P).derive(password.encode())
    return f"scrypt${LOG2_N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant work whether or not a user exists (``stored`` None): no timing oracle."""
    if stored is None:
        hash_password(password)
        return False
    kind, log2n, r, p, salt, digest = stored.split("$")
    if kind != "scrypt":
        raise ValueError("unknown password hash scheme")
    kdf = Scrypt(salt=base64.b64decode(salt), length=_LEN, n=2 ** int(log2n), r=int(r), p=int(p))
    try:
        kdf.verify(password.encode(), base64.b64decode(digest))
    except InvalidKey:
        return False
    return True
