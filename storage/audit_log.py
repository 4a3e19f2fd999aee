"""The audit log in PostgreSQL: appended in the transaction of the action it records.

Every privileged or money-moving action calls :func:`append` inside its own
transaction, so the record exists if and only if the action committed. Appends
take one transaction-scoped advisory lock: the chain needs each record to know
the hash of the one before, so appends are serialized, but only for the moment
between the lock and the commit (callers append last, just before committing).

:func:`verify_database` walks the stored chain with
:func:`storage.audit_chain.verify`; ``paynode audit verify`` prints its result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage.audit_chain import GENESIS_HASH, AuditRecord, chain, verify
from paynode.storage.database import libpq_url

_LOCK_KEY = 0x61756469746C6F67  # "auditlog"
_FIELDS = AuditRecord.__struct_fields__
_COLS = ", ".join(_FIELDS)
_INSERT = sa.text(
    f"INSERT INTO audit_log ({_COLS}) VALUES ({', '.join(':' + f for f in _FIELDS)})"
).bindparams(
    # None is stored as SQL NULL, not JSON null (both read back as None: same hash).
    sa.bindparam("before", type_=sa.JSON(none_as_null=True)),
    sa.bindparam("after", type_=sa.JSON(none_as_null=True)),
)
MAX_VALUE_BYTES = 16 * 1024  # a record's before/after each, JSON-encoded


class Entry(msgspec.Struct, frozen=True):
    """One action to record; :func:`append_many` chains and stores it."""

    actor: str
    action: str
    subject: str
    source_ip: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


_LAST = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"


def _checked(entries: list[Entry]) -> None:
    for e in entries:
        for value in (e.before, e.after):
            if value is not None and len(msgspec.json.encode(value)) > MAX_VALUE_BYTES:
                raise ValueError(f"audit {e.action}: before/after above {MAX_VALUE_BYTES} bytes")


def _chained(entries: list[Entry], last: tuple[int, str] | None) -> list[AuditRecord]:
    """``entries`` as records following ``last`` (seq, hash), or the genesis."""
    seq, prev = (0, GENESIS_HASH) if last is None else last
    out = []
    for e in entries:
        seq += 1
        rec = chain(prev, seq, actor=e.actor, action=e.action, subject=e.subject,
                    source_ip=e.source_ip, before=e.before, after=e.after)  # fmt: skip
        out.append(rec)
        prev = rec.hash
    return out


async def append_many(conn: AsyncConnection, entries: list[Entry]) -> list[AuditRecord]:
    """Chain and insert records in ``conn``'s transaction (which must be open), in order."""
    _checked(entries)
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    last = (await conn.execute(sa.text(_LAST))).first()
    out = _chained(entries, None if last is None else (last[0], last[1]))
    await conn.execute(_INSERT, [msgspec.structs.asdict(r) for r in out])
    return out


_COPY = f"COPY audit_log ({_COLS}) FROM STDIN"
_COPY_TYPES = ["int8", "text", "text", "text", "text", "text", "jsonb", "jsonb", "text", "text"]
_encode_json = msgspec.json.encode


async def append_copy(conn: psycopg.AsyncConnection, entries: list[Entry]) -> list[AuditRecord]:
    """:func:`append_many` in one transaction of its own, written by COPY (the group
    commit of the transfer requests' records: many per flush, no per-row statement)."""
    _checked(entries)
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await cur.execute(_LAST)
        last = await cur.fetchone()
        out = _chained(entries, None if last is None else (last[0], last[1]))
        async with cur.copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for r in out:
                before = None if r.before is None else _json(r.before)
                after = None if r.after is None else _json(r.after)
                await copy.write_row((r.seq, r.at, r.actor, r.action, r.subject, r.source_ip,
                                      before, after, r.prev_hash, r.hash))  # fmt: skip
    return out


def _json(value: dict[str, Any]) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value, dumps=lambda v: _encode_json(v).decode())


async def append(
    conn: AsyncConnection,
    *,
    actor: str,
    action: str,
    subject: str,
    source_ip: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditRecord:
    """Chain and insert one record in ``conn``'s transaction (which must be open)."""
    (rec,) = await append_many(conn, [Entry(actor, action, subject, source_ip, before, after)])
    return rec


def read_records(database_url: str, batch: int = 5_000) -> Iterator[AuditRecord]:
    """Every stored record in seq order, streamed (a server-side cursor)."""
    with psycopg.connect(libpq_url(database_url)) as conn, conn.transaction():
        cur = conn.cursor(name="audit_walk")
        cur.itersize = batch
        cur.execute(f"SELECT {_COLS} FROM audit_log ORDER BY seq")
        for row in cur:
            yield AuditRecord(*row)


class Verification(msgspec.Struct):
    records: int  # records read (up to the first broken one)
    first_broken_seq: int | None  # None: the chain is intact
    head_hash: str  # hash of the last record read (GENESIS_HASH if none)


def verify_database(database_url: str) -> Verification:
    """Walk the chain; stop at the first record that breaks it."""
    count = 0
    head = GENESIS_HASH
    prev_seq = 0
    for rec in read_records(database_url):
        broken = verify([rec], prev_hash=head, prev_seq=prev_seq)
        if broken is not None:
            return Verification(count, broken, head)
        count += 1
        head, prev_seq = rec.hash, rec.seq
    return Verification(count, None, head)
