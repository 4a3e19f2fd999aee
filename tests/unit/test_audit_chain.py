"""The hash-chained audit log: building, verifying, tampering, and the analytics export."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import msgspec
import pytest

from paynode.storage.audit_chain import (
    GENESIS_HASH,
    AuditRecord,
    canonical,
    chain,
    redact_for_analytics,
    utc_iso,
    verify,
)

T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def build(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        rec = chain(
            prev,
            seq,
            actor=f"user-{seq % 7}",
            action="payee.update",
            subject=f"payee-{seq}",
            source_ip=f"203.0.113.{seq % 250}",
            before={"iban": f"DE00 0000 {seq:04d}", "name": "Jürgen Müller"},
            after={"iban": f"DE00 9999 {seq:04d}", "name": "Jürgen Müller", "tags": ["a"]},
            at=T0 + timedelta(seconds=seq),
        )
        records.append(rec)
        prev = rec.hash
    return records


@pytest.fixture
def log() -> list[AuditRecord]:
    return build(100)


def test_intact_chain_of_100_verifies(log: list[AuditRecord]) -> None:
    assert verify(log) is None
    assert verify(iter(log)) is None  # any iterable, e.g. a cursor
    assert verify([]) is None
    assert log[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in pairwise(log))


def test_hash_is_sha256_of_canonical_json_without_hash(log: list[AuditRecord]) -> None:
    rec = log[41]
    body = canonical(rec)
    assert rec.hash == hashlib.sha256(body).hexdigest()
    decoded = json.loads(body)
    assert "hash" not in decoded
    assert set(decoded) == set(AuditRecord.__struct_fields__) - {"hash"}
    # Sorted keys at every level, no whitespace, UTF-8 rather than \u escapes.
    assert (
        body
        == json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert "Müller".encode() in body


def test_edited_after_is_caught_at_that_seq(log: list[AuditRecord]) -> None:
    log[49] = msgspec.structs.replace(log[49], after={**log[49].after, "iban": "XX"})
    assert verify(log) == 50


@pytest.mark.parametrize(
    "change",
    [
        {"actor": "someone-else"},
        {"at": "2025-03-01T09:30:51.000001Z"},
        {"source_ip": "198.51.100.1"},
        {"before": None},
        {"action": "payee.delete"},
    ],
)
def test_any_edited_field_is_caught(log: list[AuditRecord], change: dict) -> None:
    log[10] = msgspec.structs.replace(log[10], **change)
    assert verify(log) == 11


def test_deleted_record_is_caught_at_the_seq_after_the_gap(log: list[AuditRecord]) -> None:
    del log[59]  # seq 60
    assert verify(log) == 61


def test_deleted_first_record_is_caught(log: list[AuditRecord]) -> None:
    assert verify(log[1:]) == 2


def test_reordering_is_caught(log: list[AuditRecord]) -> None:
    log[30], log[31] = log[31], log[30]  # seq 31 and 32
    assert verify(log) == 32


def test_rehashed_edit_is_caught_at_the_next_record(log: list[AuditRecord]) -> None:
    forged = msgspec.structs.replace(log[49], after={"iban": "attacker"})
    log[49] = msgspec.structs.replace(forged, hash=hashlib.sha256(canonical(forged)).hexdigest())
    assert verify(log[:50]) is None  # the forged record is self-consistent...
    assert verify(log) == 51  # ...but the next one still points at the original hash


def test_renumbered_seq_is_caught(log: list[AuditRecord]) -> None:
    log[20] = msgspec.structs.replace(log[20], seq=99)
    assert verify(log) == 99  # the seq as stored, which is what an operator looks up


def test_verify_a_tail_from_a_checkpoint(log: list[AuditRecord]) -> None:
    head = log[69]
    assert verify(log[70:], prev_hash=head.hash, prev_seq=head.seq) is None
    assert verify(log[71:], prev_hash=head.hash, prev_seq=head.seq) == 72


def test_chain_normalizes_what_it_hashes() -> None:
    rec = chain(
        GENESIS_HASH,
        1,
        actor="u1",
        action="limits.set",
        subject="acct-1",
        source_ip="192.0.2.7",
        after={"limits": (100, 200), 3: "three"},
        at=datetime(2025, 3, 1, 11, 30, tzinfo=timezone(timedelta(hours=2))),
    )
    # What a JSON column returns: lists for tuples, string keys; the time in UTC.
    assert rec.after == {"limits": [100, 200], "3": "three"}
    assert rec.at == "2025-03-01T09:30:00.000000Z"
    stored = msgspec.json.decode(msgspec.json.encode(rec), type=AuditRecord)
    assert verify([stored]) is None


def test_chain_defaults_to_now_in_utc() -> None:
    rec = chain(GENESIS_HASH, 1, actor="u", action="a", subject="s", source_ip="::1")
    when = datetime.fromisoformat(rec.at)
    assert when.tzinfo is not None and when.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)
    assert rec.before is None and rec.after is None


@pytest.mark.parametrize(
    ("prev", "seq", "kwargs", "error"),
    [
        ("abc", 1, {}, ValueError),
        ("G" * 64, 1, {}, ValueError),
        (GENESIS_HASH.upper().replace("0", "A"), 1, {}, ValueError),
        (GENESIS_HASH, 0, {}, ValueError),
        (GENESIS_HASH, 1, {"at": datetime(2025, 1, 1)}, ValueError),  # naive time
        (GENESIS_HASH, 1, {"after": ["not", "a", "dict"]}, TypeError),
        (GENESIS_HASH, 1, {"before": {"x": object()}}, TypeError),
    ],
)
def test_chain_rejects_bad_input(prev: str, seq: int, kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        chain(prev, seq, actor="u", action="a", subject="s", source_ip="::1", **kwargs)


def test_utc_iso_requires_an_aware_datetime() -> None:
    assert utc_iso(T0) == "2025-03-01T09:30:00.000000Z"
    with pytest.raises(ValueError, match="timezone"):
        utc_iso(datetime(2025, 1, 1))


def test_redaction_drops_values_and_ip_but_keeps_keys_and_ids(log: list[AuditRecord]) -> None:
    rec = log[4]
    out = redact_for_analytics(rec)
    assert out == {
        "seq": 5,
        "at": rec.at,
        "actor": rec.actor,
        "action": "payee.update",
        "subject": "payee-5",
        "before_keys": ["iban", "name"],
        "after_keys": ["iban", "name", "tags"],
        "prev_hash": rec.prev_hash,
        "hash": rec.hash,
    }
    flat = json.dumps(out, ensure_ascii=False)
    for secret in ("DE00", "Müller", "Jürgen", rec.source_ip):
        assert secret not in flat
    empty = chain(GENESIS_HASH, 1, actor="u", action="login", subject="u", source_ip="::1")
    assert redact_for_analytics(empty)["before_keys"] is None
