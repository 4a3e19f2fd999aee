"""The audit log in PostgreSQL: appends, the append-only trigger, tampering found by
``paynode audit verify``, concurrent appends, and the export to DuckDB without PII.

Each test gets a fresh database (conftest's ``database_url``), so tampering with
one chain never breaks another test's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import psycopg
import pytest

from paynode.actors.analytics import last_key
from paynode.storage.analytics import AUDIT, connect_views
from paynode.storage.audit_chain import GENESIS_HASH, AuditRecord, canonical, redact_for_analytics
from paynode.storage.audit_log import read_records, verify_database
from paynode.storage.database import async_engine, libpq_url
from tests.support.node import RunningNode, wait_until

REPO = Path(__file__).resolve().parents[2]

# Personal data that the records carry and that must never leave PostgreSQL.
IP = "203.0.113.77"
IBAN = "DE89370400440532013000"
NAME = "Ada Lovelace"
PII = (IP, IBAN, NAME)


def _fields(i: int) -> dict[str, Any]:
    """The i-th test record: an actor id, a payment, before/after holding PII."""
    return {
        "actor": f"user-{i % 3}",
        "action": "payment.update",
        "subject": f"pay-{i}",
        "source_ip": IP,
        "before": None if i % 4 == 0 else {"status": "pending", "payee_name": NAME},
        "after": {"amount": 100 + i, "iban": IBAN, "status": "processing"},
    }


def append_records(
    database_url: str, fields: list[dict[str, Any]], tasks: int = 1
) -> list[AuditRecord]:
    """Append each record in its own transaction, from ``tasks`` concurrent tasks."""
    from paynode.storage.audit_log import append

    async def main() -> list[AuditRecord]:
        engine = async_engine(database_url, pool_size=tasks)
        out: list[AuditRecord] = []

        async def worker(w: int) -> None:
            for f in fields[w::tasks]:
                async with engine.begin() as conn:
                    out.append(await append(conn, **f))

        try:
            await asyncio.gather(*(worker(w) for w in range(tasks)))
        finally:
            await engine.dispose()
        return sorted(out, key=lambda r: r.seq)

    return asyncio.run(main())


def _audit_cli(database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "paynode.node.cli", "audit", "verify"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _bypass_trigger(database_url: str, *statements: str) -> None:
    """What a superuser can do: switch the trigger off, write, switch it back on."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        try:
            for stmt in statements:
                conn.execute(stmt)
        finally:
            conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        (enabled,) = conn.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_log_append_only'"
        ).fetchone()
        assert enabled == "O"


def _rehash(rec: AuditRecord) -> AuditRecord:
    return msgspec.structs.replace(rec, hash=hashlib.sha256(canonical(rec)).hexdigest())


# -- appending and verifying ----------------------------------------------------------


def test_appended_records_chain_and_verify(database_url: str) -> None:
    empty = verify_database(database_url)
    assert (empty.records, empty.first_broken_seq, empty.head_hash) == (0, None, GENESIS_HASH)
    written = append_records(database_url, [_fields(i) for i in range(12)])
    assert [r.seq for r in written] == list(range(1, 13))
    assert written[0].prev_hash == GENESIS_HASH
    # What comes back from the table is exactly what was hashed (jsonb round trip).
    assert list(read_records(database_url)) == written
    result = verify_database(database_url)
    assert (result.records, result.first_broken_seq, result.head_hash) == (
        12, None, written[-1].hash,
    )  # fmt: skip


def test_the_application_cannot_update_delete_or_truncate(database_url: str) -> None:
    # The application's connection (DATABASE_URL's role) against the statement trigger.
    written = append_records(database_url, [_fields(i) for i in range(3)])
    with psycopg.connect(libpq_url(database_url)) as conn:
        for stmt in (
            "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2",
            "DELETE FROM audit_log WHERE seq = 3",
            "TRUNCATE audit_log",
        ):
            with (
                pytest.raises(psycopg.errors.RaiseException, match="append-only"),
                conn.transaction(),
            ):
                conn.execute(stmt)
    assert list(read_records(database_url)) == written
    assert verify_database(database_url).first_broken_seq is None


def test_concurrent_appends_make_one_gapless_chain(database_url: str) -> None:
    fields = [_fields(i) | {"actor": f"worker-{i % 6}"} for i in range(90)]
    written = append_records(database_url, fields, tasks=6)
    assert [r.seq for r in written] == list(range(1, 91))
    assert len({r.hash for r in written}) == 90
    result = verify_database(database_url)
    assert (result.records, result.first_broken_seq, result.head_hash) == (
        90, None, written[-1].hash,
    )  # fmt: skip
    workers = [r.actor for r in written]
    assert workers != sorted(workers), "the tasks' appends interleaved"


# -- tampering, found by `paynode audit verify` ----------------------------------------


def test_cli_reports_an_intact_chain(database_url: str) -> None:
    written = append_records(database_url, [_fields(i) for i in range(5)])
    done = _audit_cli(database_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 records checked" in done.stdout and written[-1].hash in done.stdout


@pytest.mark.parametrize(
    ("how", "broken", "verified"),
    [
        # An amount changed inside `after` of seq 5: its hash no longer matches.
        ("edit", 5, 4),
        # The same, with seq 5's hash recomputed: seq 6's link to it breaks.
        ("edit_and_rehash", 6, 5),
        # Seq 5 removed: seq 6 follows seq 4.
        ("delete", 6, 4),
    ],
)
def test_cli_names_the_first_tampered_seq(
    database_url: str, how: str, broken: int, verified: int
) -> None:
    written = append_records(database_url, [_fields(i) for i in range(9)])
    last_good = written[3].hash
    if how == "edit":
        _bypass_trigger(
            database_url,
            "UPDATE audit_log SET after = jsonb_set(after, '{amount}', '1') WHERE seq = 5",
        )
    elif how == "edit_and_rehash":
        forged = _rehash(msgspec.structs.replace(written[4], actor="user-innocent"))
        _bypass_trigger(
            database_url,
            f"UPDATE audit_log SET actor = '{forged.actor}', hash = '{forged.hash}' WHERE seq = 5",
        )
        last_good = forged.hash
    else:
        _bypass_trigger(database_url, "DELETE FROM audit_log WHERE seq = 5")

    done = _audit_cli(database_url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"audit chain broken at seq {broken}:" in done.stdout
    assert f"{verified} records before it verified, last good hash {last_good}" in done.stdout
    for value in (*PII, "user-", "pay-", "payment.update", "amount"):  # no record contents
        assert value not in done.stdout + done.stderr, value
    # The trigger is back on: the application still cannot repair or hide it.
    with (
        psycopg.connect(libpq_url(database_url)) as conn,
        pytest.raises(psycopg.errors.RaiseException, match="append-only"),
    ):
        conn.execute("DELETE FROM audit_log")


# -- the export to DuckDB --------------------------------------------------------------


def _unusual(i: int) -> dict[str, Any]:
    """Records whose keys need CSV quoting: a quote, a line break, non-ASCII, none."""
    return _fields(i) | {
        "before": {},
        "after": {"iban": IBAN, 'note "x"\nline two': NAME, "é": 1, "Z": 2},
    }


def test_the_postgres_view_drops_pii_and_keeps_the_keys(database_url: str) -> None:
    # The `audit` view (migration 6) is what the analytics streamer exports.
    written = append_records(database_url, [_fields(i) for i in range(6)] + [_unusual(6)])
    with psycopg.connect(libpq_url(database_url)) as conn:
        cur = conn.execute(f"SELECT {', '.join(AUDIT.names)} FROM audit ORDER BY txid, id")
        assert [d.name for d in cur.description] == AUDIT.names
        rows = [dict(zip(AUDIT.names, r, strict=True)) for r in cur.fetchall()]
    assert [r["seq"] for r in rows] == [r.seq for r in written]
    for row, rec in zip(rows, written, strict=True):
        assert row["id"] == f"{rec.seq:020d}"
        since_epoch = datetime.fromisoformat(rec.at) - datetime(1970, 1, 1, tzinfo=UTC)
        assert row["ts"] == since_epoch // timedelta(microseconds=1) * 1000
        keys = {
            k: None if row[k] is None else (row[k].split(",") if row[k] else [])
            for k in ("before_keys", "after_keys")
        }
        assert {**{k: row[k] for k in row if k not in ("txid", "id", "ts")}, **keys} == (
            redact_for_analytics(rec)
        )
        assert not any(p in str(v) for v in row.values() for p in PII), row


def _audit_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cur = con.execute("SELECT * FROM audit ORDER BY seq")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_analysts_get_the_audit_log_without_pii(make_node) -> None:
    import ray  # only after conftest set Ray's token auth up

    node: RunningNode = make_node(recon_interval_ms=0)
    # The unusual record last: it is the last row of the export the watermark is read from.
    append_records(node.database_url, [_fields(i) for i in range(10)] + [_unusual(10)])
    expected = [redact_for_analytics(r) for r in read_records(node.database_url)]

    def published() -> list[dict[str, Any]] | None:
        ray.get(node.analytics.sync.remote(), timeout=60)
        con = connect_views(node.settings.analytics_path())
        try:
            rows = _audit_rows(con)
        finally:
            con.close()
        return rows if len(rows) >= len(expected) else None

    rows = wait_until(published, timeout=60, interval=0.2, what="the audit log in DuckDB")
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        assert {k: row[k] for k in want} == want
        assert row["occurred_at"] == datetime.fromisoformat(want["at"]).replace(tzinfo=None)
        assert row["day"] == row["occurred_at"].date()
    assert expected[-1]["after_keys"] == ["Z", "iban", 'note "x"\nline two', "é"]
    assert expected[-1]["before_keys"] == []
    assert not {"source_ip", "before", "after"} & set(rows[0])

    # The Parquet files themselves: only the exported columns, and no PII in any value.
    live = node.settings.analytics_path() / "live"
    raw = duckdb.connect()
    try:
        cur = raw.execute(f"SELECT * FROM read_parquet('{live}/audit-*.parquet')")
        assert [d[0] for d in cur.description] == AUDIT.names
        values = [str(v) for row in cur.fetchall() for v in row]
    finally:
        raw.close()
    assert values and not [v for v in values if any(p in v for p in PII)]

    # The plain DuckDB client sees the view too, read-only on views.duckdb.
    views = duckdb.connect(str(node.settings.analytics_path() / "views.duckdb"), read_only=True)
    try:
        assert views.execute("SELECT count(*) FROM audit").fetchone()[0] == len(expected)
    finally:
        views.close()


def test_last_key_reads_rows_spanning_lines(database_url: str, tmp_path: Path) -> None:
    # PostgreSQL's own CSV: quoted fields with line breaks and quotes, a row longer
    # than the tail read, and plain rows.
    cases = {
        "plain": "VALUES (1, '01', 'a'), (2, '02', 'b')",
        "multiline": "VALUES (1, '01', 'a'), (7, '09', E'x\\n\"y\",\\n\\nz')",
        "quoted_id": "VALUES (1, '01', 'a'), (8, 'a,\"b', 'c')",
        "long": "VALUES (1, '01', 'a'), (9, '10', repeat(E'k\\n', 5000))",
        "long_plain": "VALUES (1, '01', 'a'), (10, '11', repeat('k', 5000))",
        "single": "VALUES (3, '03', E'only\\nrow')",
    }
    expected = {
        "plain": (2, "02"),
        "multiline": (7, "09"),
        "quoted_id": (8, 'a,"b'),
        "long": (9, "10"),
        "long_plain": (10, "11"),
        "single": (3, "03"),
    }
    with psycopg.connect(libpq_url(database_url)) as conn:
        for name, values in cases.items():
            path = tmp_path / f"{name}.csv"
            with (
                path.open("wb") as f,
                conn.cursor().copy(f"COPY ({values}) TO STDOUT (FORMAT csv)") as copy,
            ):
                for data in copy:
                    f.write(data)
            assert last_key(path) == expected[name], name


# -- the transfer requests' records (group-committed by the front) ------------------------


def test_every_transfer_request_is_audited_in_the_chain(node: RunningNode) -> None:
    """Single and batch requests each leave one record, written by COPY in the writer's
    flush: jsonb bodies (not strings), the ids' digest, and a chain that verifies."""
    for account_id in ("au-a", "au-b"):
        assert (
            node.http.post("/v1/accounts", json={"id": account_id, "currency": "USD"}).status_code
            == 201
        )
    single = {"id": "au-t1", "debit_account_id": "au-a", "credit_account_id": "au-b",
              "amount": 7, "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=single).status_code == 201
    batch = [dict(single, id=f"au-b{i}") for i in range(3)]
    assert node.http.post("/v1/transfers/batch", json={"transfers": batch}).status_code == 200
    records = [r for r in read_records(node.database_url) if r.action == "transfers.submit"]
    assert [(r.subject, r.after["count"], r.after["last_id"]) for r in records] == [
        ("au-t1", 1, "au-t1"),
        ("au-b0", 3, "au-b2"),
    ]
    digest = hashlib.sha256("\n".join(t["id"] for t in batch).encode()).hexdigest()
    assert records[1].after["ids_sha256"] == digest
    assert records[1].actor == "bootstrap" and records[1].before is None
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        kinds = conn.execute(
            "SELECT jsonb_typeof(after), before IS NULL FROM audit_log"
            " WHERE action = 'transfers.submit'"
        ).fetchall()
    assert kinds == [("object", True), ("object", True)]
    assert verify_database(node.database_url).first_broken_seq is None
