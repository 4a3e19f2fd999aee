"""Step-up one-time codes: one HOTP code per challenge, expiry, attempts, reuse."""

from __future__ import annotations

import pytest

from paynode.domain.risk.otp import Challenge, check, code_for, new_challenge

T0 = 1_700_000_000.0


def wrong(ch: Challenge) -> str:
    # Any other 6-digit code: shift each digit so it always differs.
    return "".join(str((int(c) + 1) % 10) for c in code_for(ch))


def test_new_challenge() -> None:
    ch = new_challenge(T0)
    assert len(ch.secret) == 20 and ch.issued_at == T0
    assert (ch.attempts, ch.used) == (0, False)
    code = code_for(ch)
    assert len(code) == 6 and code.isdigit()
    assert new_challenge(T0).secret != ch.secret
    assert ch.secret.hex() not in repr(ch) and str(ch.secret) not in repr(ch)


def test_rfc4226_vector() -> None:
    # RFC 4226 appendix D, count 0: the library is wired as HOTP-SHA1, 6 digits.
    assert code_for(Challenge(b"12345678901234567890", T0)) == "755224"


def test_right_code_ok() -> None:
    ch = new_challenge(T0)
    ch2, outcome = check(ch, code_for(ch), T0 + 10)
    assert outcome == "ok"
    assert (ch2.used, ch2.attempts) == (True, 1)
    assert ch.used is False  # the input is not mutated


def test_wrong_code_counted_then_right_code_ok() -> None:
    ch = new_challenge(T0)
    ch, outcome = check(ch, wrong(ch), T0 + 1)
    assert (outcome, ch.attempts, ch.used) == ("otp_invalid", 1, False)
    ch, outcome = check(ch, code_for(ch), T0 + 2)
    assert (outcome, ch.attempts) == ("ok", 2)


def test_five_wrong_locks_even_the_right_code() -> None:
    ch = new_challenge(T0)
    for i in range(5):
        ch, outcome = check(ch, wrong(ch), T0 + i)
        assert outcome == "otp_invalid"
    assert ch.attempts == 5
    after, outcome = check(ch, code_for(ch), T0 + 6)
    assert outcome == "otp_locked"
    assert after == ch  # nothing more counted, never marked used


def test_four_wrong_then_right_is_ok() -> None:
    ch = new_challenge(T0)
    for _ in range(4):
        ch, _outcome = check(ch, wrong(ch), T0)
    assert check(ch, code_for(ch), T0)[1] == "ok"


def test_custom_attempt_budget() -> None:
    ch = new_challenge(T0)
    ch, _ = check(ch, wrong(ch), T0, max_attempts=1)
    assert check(ch, code_for(ch), T0, max_attempts=1)[1] == "otp_locked"


def test_expiry() -> None:
    ch = new_challenge(T0)
    assert check(ch, code_for(ch), T0 + 300)[1] == "ok"  # the last valid instant
    late, outcome = check(ch, code_for(ch), T0 + 300.001)
    assert outcome == "otp_expired"
    assert late == ch  # no attempt counted on a dead challenge
    assert check(ch, code_for(ch), T0 + 61, max_age_s=60)[1] == "otp_expired"


def test_reuse_after_success_refused() -> None:
    ch = new_challenge(T0)
    ch, outcome = check(ch, code_for(ch), T0 + 1)
    assert outcome == "ok"
    for later in (T0 + 2, T0 + 1_000):  # reuse wins over expiry: say what really happened
        again, outcome = check(ch, code_for(ch), later)
        assert outcome == "otp_reused"
        assert again == ch


# Fullwidth, Arabic-Indic and superscript digits all pass str.isdigit().
MALFORMED = [
    "", "12345", "1234567", "12 345", " 123456", "123456 ", "12345a", "abcdef", "-12345",
    "+12345", "\uff11\uff12\uff13\uff14\uff15\uff16", "\u0661\u0662\u0663\u0664\u0665\u0666",
    "12345\u00b2", "123\n45",
]  # fmt: skip


@pytest.mark.parametrize("bad", MALFORMED)
def test_malformed_codes_are_invalid_and_counted(bad: str) -> None:
    ch = new_challenge(T0)
    ch2, outcome = check(ch, bad, T0)
    assert (outcome, ch2.attempts, ch2.used) == ("otp_invalid", 1, False)


def test_non_string_code_is_invalid() -> None:
    ch = new_challenge(T0)
    for bad in (None, 123456, b"123456"):
        ch, outcome = check(ch, bad, T0)  # type: ignore[arg-type]
        assert outcome == "otp_invalid"
    assert ch.attempts == 3


def test_malformed_codes_exhaust_the_budget() -> None:
    ch = new_challenge(T0)
    for _ in range(5):
        ch, _outcome = check(ch, "nope", T0)
    assert check(ch, code_for(ch), T0)[1] == "otp_locked"
