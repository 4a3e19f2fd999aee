"""Encryption of personal data at rest: the one module every PII column goes through.

A sealed value is ``b"\\x01" | len(kid) | kid | nonce(12) | AES-256-GCM(ciphertext+tag)``.
The associated data is ``"<table>.<column>:<row id>"``: a ciphertext copied
into another row or column fails authentication instead of decrypting to the
wrong person's data. The kid travels with the value, so rows sealed under a
retired key still open while ``paynode keys rotate`` moves them to the new one.

Exact-match lookups (an email at login) use a blind index: HMAC-SHA256 under
its own key of a normalized value, never the value itself.

New PII columns register in :data:`SEALED_COLUMNS`; rotation covers them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from paynode.storage.keyring import RECHECK_S, Keyring

_VERSION = 1
_NONCE = 12
MAX_PLAINTEXT = 4096  # every PII field is small; a limit keeps a bad caller from sealing megabytes


class SealError(Exception):
    """A value could not be opened: wrong row or field, tampered, or its key is gone.

    The message names the field and the key id, never the value.
    """


def _aad(table: str, column: str, row_id: str) -> bytes:
    assert ":" not in table and ":" not in column, "aad parts must not be ambiguous"
    return f"{table}.{column}:{row_id}".encode()


def seal(
    keys: Keyring,
    plaintext: str,
    table: str,
    column: str,
    row_id: str,
    limit: int = MAX_PLAINTEXT,
) -> bytes:
    data = plaintext.encode()
    if len(data) > limit:
        raise ValueError(f"{table}.{column}: value longer than {limit} bytes")
    keys.refresh()
    kid = keys.pii_active
    nonce = os.urandom(_NONCE)  # random per value: a repeated (key, nonce) pair breaks GCM
    ct = AESGCM(keys.pii_keys[kid]).encrypt(nonce, data, _aad(table, column, row_id))
    kid_b = kid.encode()
    return bytes((_VERSION, len(kid_b))) + kid_b + nonce + ct


def kid_of(sealed: bytes) -> str:
    if len(sealed) < 2 or sealed[0] != _VERSION:
        raise SealError("not a sealed value")
    return sealed[2 : 2 + sealed[1]].decode()


def open_(keys: Keyring, sealed: bytes, table: str, column: str, row_id: str) -> str:
    kid = kid_of(sealed)
    key = keys.pii_key(kid)
    if key is None:
        raise SealError(f"{table}.{column}: key {kid} is not in the keyring")
    start = 2 + sealed[1]
    nonce, ct = sealed[start : start + _NONCE], sealed[start + _NONCE :]
    try:
        return AESGCM(key).decrypt(nonce, ct, _aad(table, column, row_id)).decode()
    except InvalidTag:
        raise SealError(f"{table}.{column}: does not authenticate for this row") from None


def seal_opt(
    keys: Keyring, value: str | None, table: str, column: str, row_id: str
) -> bytes | None:
    return None if value is None else seal(keys, value, table, column, row_id)


def open_opt(
    keys: Keyring, sealed: bytes | None, table: str, column: str, row_id: str
) -> str | None:
    return None if sealed is None else open_(keys, bytes(sealed), table, column, row_id)


def blind_index(keys: Keyring, kind: str, value: str) -> bytes:
    """A keyed digest for exact lookup; ``kind`` keeps equal values of two kinds apart."""
    return hmac.new(keys.index_key, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()


def normalize_email(email: str) -> str:
    return email.strip().lower()


# -- rotation -----------------------------------------------------------------


@dataclass(frozen=True)
class SealedTable:
    table: str
    id_column: str
    columns: tuple[str, ...]


# Every sealed column in the schema. A module adding PII adds its table here.
SEALED_COLUMNS: tuple[SealedTable, ...] = (
    SealedTable(
        "users",
        "id",
        ("email_ct", "name_ct", "phone_ct", "birth_date_ct", "address_ct", "kyc_id_ct"),
    ),
    SealedTable("webhook_endpoints", "id", ("secret_ct", "previous_secret_ct")),
    SealedTable("devices", "id", ("token_ct",)),
    SealedTable("inbound_webhooks", "id", ("payload_ct",)),
    SealedTable("bank_accounts", "id", ("account_ct", "holder_ct", "micro_ct")),
    SealedTable("link_items", "id", ("access_ct",)),
    SealedTable("ach_files", "id", ("content_ct",)),
    SealedTable("otp_challenges", "payment_id", ("secret_ct",)),
    SealedTable("rtp_requests", "id", ("creditor_name_ct", "creditor_account_ct")),
    SealedTable("disputes", "id", ("evidence_ct",)),
)


@dataclass
class RotationReport:
    rows_seen: int = 0
    values_resealed: int = 0
    raced: int = 0  # changed by the node while we worked; the next pass takes them


def reseal_batch(
    conn: sa.Connection, keys: Keyring, spec: SealedTable, after: str, limit: int
) -> tuple[str | None, RotationReport]:
    """Re-seal, under the active key, one batch of rows with ids after ``after``.

    Each row is updated only if its sealed values are still the ones read
    (compare-and-set), so a concurrent write by a running node is never lost.
    Returns the last id seen (None when the table is done).
    """
    report = RotationReport()
    cols = ", ".join(spec.columns)
    # Ids compared as text: one cursor type for text and bigint keys (AAD uses the text too).
    key = f"{spec.id_column}::text"
    rows = conn.execute(
        sa.text(
            f"SELECT {key}, {cols} FROM {spec.table}"
            f" WHERE {key} > :after ORDER BY {key} LIMIT :limit"
        ),
        {"after": after, "limit": limit},
    ).all()
    active = keys.pii_active
    for row in rows:
        report.rows_seen += 1
        row_id, values = row[0], row[1:]
        changes: dict[str, bytes] = {}
        for column, value in zip(spec.columns, values, strict=True):
            if value is None or kid_of(bytes(value)) == active:
                continue
            plain = open_(keys, bytes(value), spec.table, column, row_id)
            # Already stored, so already within its column's limit.
            changes[column] = seal(keys, plain, spec.table, column, row_id, limit=len(plain) * 4)
        if not changes:
            continue
        sets = ", ".join(f"{c} = :new_{c}" for c in changes)
        same = " AND ".join(f"{c} = :old_{c}" for c in changes)
        params: dict[str, object] = {"id": row_id}
        for c, v in changes.items():
            params[f"new_{c}"] = v
            params[f"old_{c}"] = bytes(values[spec.columns.index(c)])
        done = conn.execute(
            sa.text(f"UPDATE {spec.table} SET {sets} WHERE {key} = :id AND {same}"),
            params,
        ).rowcount
        if done:
            report.values_resealed += len(changes)
        else:
            report.raced += 1
    return (rows[-1][0] if rows else None), report


def stale_values(conn: sa.Connection, keys: Keyring, specs: Iterable[SealedTable]) -> int:
    """How many sealed values are not under the active key (0 when rotation is complete)."""
    stale = 0
    for spec in specs:
        cols = ", ".join(spec.columns)
        for row in conn.execute(sa.text(f"SELECT {cols} FROM {spec.table}")):
            stale += sum(1 for v in row if v is not None and kid_of(bytes(v)) != keys.pii_active)
    return stale


def reseal_all(
    database_url: str, keys: Keyring, batch: int = 500, max_passes: int = 5,
    settle_s: float = 2 * RECHECK_S,
) -> tuple[RotationReport, int]:  # fmt: skip
    """Move every sealed value to the active key, batch by batch, while the node runs.

    Each batch is its own short transaction, so no row stays locked for long.
    Passes repeat while values remain under old keys (a node that had not yet
    seen the new key may have written some meanwhile). A pass that finds none
    counts only once ``settle_s`` have passed since the start: running nodes
    re-read the keyring within ``RECHECK_S``, so until then one may still seal
    with the old key (found by the rotation test on a busy machine: "0 still
    under old keys", then a write under the old one). Returns the totals and
    how many values are still stale (0 = done).
    """
    from paynode.storage.database import sync_engine

    assert batch >= 1 and max_passes >= 1
    engine = sync_engine(database_url)
    total = RotationReport()
    settled_at = time.monotonic() + settle_s
    try:
        for _ in range(max_passes):
            for spec in SEALED_COLUMNS:
                after: str | None = ""
                while after is not None:
                    with engine.begin() as conn:
                        after, report = reseal_batch(conn, keys, spec, after, batch)
                    total.rows_seen += report.rows_seen
                    total.values_resealed += report.values_resealed
                    total.raced += report.raced
            with engine.connect() as conn:
                stale = stale_values(conn, keys, SEALED_COLUMNS)
            wait_s = settled_at - time.monotonic()
            if stale == 0 and wait_s <= 0:
                break
            if wait_s > 0:  # every node sees the new key by then: one more pass after it
                time.sleep(wait_s)
    finally:
        engine.dispose()
    return total, stale
