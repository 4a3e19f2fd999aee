"""Tamper-evident audit log: pure functions over a hash chain of records.

Each :class:`AuditRecord` carries ``hash = sha256(canonical(record))`` where the
canonical form covers every field except ``hash`` itself, including ``prev_hash``,
the hash of the record before it. Changing, deleting or reordering a stored record
therefore breaks the chain at that point, and :func:`verify` names the first seq
where it breaks. The first record links to :data:`GENESIS_HASH` (64 zeros).

What the chain alone cannot show: the last records being cut off, or the whole log
rewritten from some point on with fresh hashes. Both need the head hash kept
somewhere the writer cannot change (the table and the writer come later).

No I/O here: the table, the writer and the DuckDB export call these functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

GENESIS_HASH = "0" * 64


class AuditRecord(msgspec.Struct, frozen=True):
    seq: int  # 1 for the first record, then +1 with no gaps
    at: str  # ISO-8601 in UTC, e.g. "2025-01-31T12:00:00.000000Z"
    actor: str  # id of who acted: a user id, a service name; never a display name
    action: str
    subject: str  # id of what was acted on
    source_ip: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str  # hex sha256 of the previous record, GENESIS_HASH for seq 1
    hash: str  # hex sha256 of canonical(self)


def canonical(rec: AuditRecord) -> bytes:
    """UTF-8 JSON of every field but ``hash``: keys sorted at every level, no whitespace."""
    fields = msgspec.structs.asdict(rec)
    del fields["hash"]
    return msgspec.json.encode(fields, order="sorted")


def _digest(rec: AuditRecord) -> str:
    return hashlib.sha256(canonical(rec)).hexdigest()


def utc_iso(when: datetime) -> str:
    """The one spelling of a timestamp that gets hashed: UTC, microseconds, ``Z``."""
    if when.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_stored(value: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    # Hash what a JSON column will hand back, not the caller's objects: tuples come
    # back as lists and int keys as strings, and a hash over the originals would not
    # verify after a round trip through the table.
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict or None, not {type(value).__name__}")
    try:
        return msgspec.json.decode(msgspec.json.encode(value))
    except (TypeError, msgspec.EncodeError) as e:
        raise TypeError(f"{name} is not JSON-serializable: {e}") from e


def chain(
    prev_hash: str,
    seq: int,
    *,
    actor: str,
    action: str,
    subject: str,
    source_ip: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """The record following ``prev_hash`` (GENESIS_HASH for the first, seq 1), hashed.

    ``at`` defaults to now; it is stored as :func:`utc_iso` spells it.
    """
    if len(prev_hash) != 64 or prev_hash.strip("0123456789abcdef"):
        raise ValueError(f"prev_hash must be 64 lowercase hex digits, got {prev_hash!r}")
    if seq < 1:
        raise ValueError(f"seq starts at 1, got {seq}")
    rec = AuditRecord(
        seq=seq,
        at=utc_iso(datetime.now(UTC) if at is None else at),
        actor=actor,
        action=action,
        subject=subject,
        source_ip=source_ip,
        before=_as_stored(before, "before"),
        after=_as_stored(after, "after"),
        prev_hash=prev_hash,
        hash="",
    )
    return msgspec.structs.replace(rec, hash=_digest(rec))


def verify(
    records: Iterable[AuditRecord], *, prev_hash: str = GENESIS_HASH, prev_seq: int = 0
) -> int | None:
    """Seq of the first record that breaks the chain, or None if it is intact.

    A record breaks it when its hash does not match its content (edited), its
    prev_hash is not the previous record's hash (edited, then rehashed), or its seq
    is not the previous seq + 1 (a record deleted or moved). ``records`` must come in
    seq order as stored. ``prev_hash`` and ``prev_seq`` anchor the first record: the
    genesis by default, or the last record already verified to check only the tail.
    """
    expected_prev, expected_seq = prev_hash, prev_seq + 1
    for rec in records:
        if (
            rec.seq != expected_seq
            or rec.prev_hash != expected_prev
            or rec.hash != _digest(rec)
        ):  # fmt: skip
            return rec.seq
        expected_prev, expected_seq = rec.hash, rec.seq + 1
    return None


def redact_for_analytics(rec: AuditRecord) -> dict[str, Any]:
    """The record for export to DuckDB, without personal data.

    before/after values can hold names, IBANs, addresses; only their keys are kept,
    which still says which fields an action touched. source_ip is personal data and
    is dropped. actor and subject are ids, kept so events can be counted per user.
    """
    return {
        "seq": rec.seq,
        "at": rec.at,
        "actor": rec.actor,
        "action": rec.action,
        "subject": rec.subject,
        "before_keys": None if rec.before is None else sorted(rec.before),
        "after_keys": None if rec.after is None else sorted(rec.after),
        "prev_hash": rec.prev_hash,
        "hash": rec.hash,
    }
