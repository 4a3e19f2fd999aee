"""One-time codes for the step-up of a risky payment: pure, no I/O, no clock of its own.

Each challenge gets a fresh random 20-byte secret and its code is HOTP
(RFC 4226, SHA1, 6 digits) at counter 0: one challenge, exactly one valid code.
HOTP rather than TOTP with a 300 s step because:

* the secret is never reused, so a time-derived moving factor adds nothing;
* TOTP steps are aligned to the epoch, not to the issue time: a code issued
  near the end of a step would die within seconds, or, with the usual one-step
  tolerance, live up to ~600 s; here validity is exactly ``issued_at +
  max_age_s``, checked explicitly;
* there is no clock-drift window to tune, and the code never changes while the
  user is typing it.

Callers persist the :class:`Challenge` (secret sealed) and must store what
:func:`check` returns with a compare-and-set on the previous version: otherwise
concurrent guesses could each see the same attempt count and bypass the limit.
The comparison itself is the library's constant-time ``verify``.
"""

from __future__ import annotations

import secrets
from typing import Literal

import msgspec
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.hotp import HOTP

SECRET_BYTES = 20  # RFC 4226 recommends 160 bits, the SHA1 output size
DIGITS = 6
COUNTER = 0  # one code per challenge: the secret is what changes
MAX_AGE_S = 300
MAX_ATTEMPTS = 5

Outcome = Literal["ok", "otp_invalid", "otp_expired", "otp_reused", "otp_locked"]


class Challenge(msgspec.Struct, frozen=True):
    secret: bytes
    issued_at: float  # seconds, same clock as the `now` given to check()
    attempts: int = 0  # codes evaluated so far, malformed ones included
    used: bool = False

    def __repr__(self) -> str:
        # Keep the secret out of logs and tracebacks.
        return (
            f"Challenge(secret=<{len(self.secret)} bytes>, issued_at={self.issued_at!r}, "
            f"attempts={self.attempts}, used={self.used})"
        )


def _hotp(secret: bytes) -> HOTP:
    return HOTP(secret, DIGITS, SHA1())


def new_challenge(now: float) -> Challenge:
    """A fresh challenge; send :func:`code_for` of it to the user, then forget the code."""
    return Challenge(secrets.token_bytes(SECRET_BYTES), now)


def code_for(ch: Challenge) -> str:
    """The 6-digit code of a challenge (to send out of band)."""
    return _hotp(ch.secret).generate(COUNTER).decode("ascii")


def _well_formed(code: object) -> bool:
    # isdigit() alone accepts non-ASCII digits such as "²" or "٣".
    return isinstance(code, str) and len(code) == DIGITS and code.isascii() and code.isdigit()


def check(
    ch: Challenge,
    code: str,
    now: float,
    max_age_s: int = MAX_AGE_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> tuple[Challenge, Outcome]:
    """Check a code; return the challenge to store back and the outcome.

    A used, locked or expired challenge is answered without looking at the code
    and without counting an attempt (it is dead either way). Otherwise every
    code counts, malformed or wrong: the attempt that exhausts the budget is
    ``otp_invalid`` and later ones ``otp_locked``, even with the right code.
    The code is valid while ``now - issued_at <= max_age_s``.
    """
    if ch.used:
        return ch, "otp_reused"
    if ch.attempts >= max_attempts:
        return ch, "otp_locked"
    if now - ch.issued_at > max_age_s:
        return ch, "otp_expired"
    counted = msgspec.structs.replace(ch, attempts=ch.attempts + 1)
    if not _well_formed(code):
        return counted, "otp_invalid"
    try:
        _hotp(ch.secret).verify(code.encode("ascii"), COUNTER)
    except InvalidToken:
        return counted, "otp_invalid"
    return msgspec.structs.replace(counted, used=True), "ok"
