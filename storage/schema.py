"""PostgreSQL schema: SQLAlchemy Core tables for the queries built with them.

The DDL lives in :mod:`storage.migrations` (versioned); each table here must
describe what those migrations leave behind. Tables queried only with SQL
text (the outbox and notifications in storage/outbox.py, notify.py and
events.py, the rails in payments.py and ach.py) are described by migrations
4, 5 and 9 alone (9: ``outbox_boundary``, and ``notifier_cursor`` keyed by
``(txid, source, key)``).

``accounts`` and ``transfers`` are also the outbox of their ledger events:
readers follow them on their ``(txid, id)`` indexes (migration 3).
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    CHAR,
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
)

metadata = MetaData()

# Ids are compared byte by byte (migration 8): fast, and ordered as Python and DuckDB order them.
Id = Text(collation="C")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("currency", CHAR(3), nullable=False),
    Column("flags", Integer, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("shard_key", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("owner_user_id", Text),  # the user who may read and debit it; NULL: admins only
    # Writing transaction (migration 3): the commit order account.created events follow.
    Column("txid", BigInteger, nullable=False),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("debit_account_id", Id, nullable=False),
    Column("credit_account_id", Id, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("flags", Integer, nullable=False),
    Column("pending_id", Id),
    Column("timeout_s", Integer, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("status", Text, nullable=False),
    Column("posted_amount", BigInteger, nullable=False),
    Column("pending_delta", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    # The writing transaction's id, set by PostgreSQL: the commit order analytics and
    # the transfer.* events follow.
    Column("txid", BigInteger, nullable=False),
)

# The ledger folded up to a transaction horizon (migration 11, storage/checkpoint.py).
ledger_checkpoint = Table(
    "ledger_checkpoint",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("below", BigInteger, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    Column("accounts", BigInteger, nullable=False),
    Column("pendings", BigInteger, nullable=False),
    Column("sum_dp", Numeric, nullable=False),
    Column("sum_cp", Numeric, nullable=False),
    Column("sum_dpend", Numeric, nullable=False),
    Column("sum_cpend", Numeric, nullable=False),
)

checkpoint_balances = Table(
    "checkpoint_balances",
    metadata,
    Column("account_id", Id, primary_key=True),
    Column("dp", BigInteger, nullable=False),
    Column("cp", BigInteger, nullable=False),
    Column("dpend", BigInteger, nullable=False),
    Column("cpend", BigInteger, nullable=False),
    Column("last_ts", BigInteger, nullable=False),
)

checkpoint_pendings = Table(
    "checkpoint_pendings",
    metadata,
    Column("id", Id, primary_key=True),
    Column("debit_account_id", Id, nullable=False),
    Column("credit_account_id", Id, nullable=False),
)

reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False),
    Column("from_txid", BigInteger),
    Column("to_txid", BigInteger),
    Column("accounts_checked", Integer, nullable=False),
    Column("transfers_checked", BigInteger, nullable=False),
    Column("skipped_in_flight", Integer, nullable=False),
    Column("found", Integer, nullable=False),
    Column("resolved", Integer, nullable=False),
    Column("error", Text),
    # migration 7
    Column("findings", Integer, nullable=False),
    Column("candidates", Integer, nullable=False),
    Column("dropped", Integer, nullable=False),
)

discrepancies = Table(
    "discrepancies",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("object_type", Text, nullable=False),
    Column("object_id", Text, nullable=False),
    Column("sources", Text, nullable=False),
    Column("expected", Text),
    Column("actual", Text),
    Column("first_run_id", BigInteger, nullable=False),
    Column("last_run_id", BigInteger, nullable=False),
    Column("found_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
)

# Differences seen once, not yet discrepancies (migration 7).
reconciliation_candidates = Table(
    "reconciliation_candidates",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("object_type", Text, primary_key=True),
    Column("object_id", Text, primary_key=True),
    Column("sources", Text, primary_key=True),
    Column("expected", Text),
    Column("actual", Text),
    Column("first_run_id", BigInteger, nullable=False),
    Column("last_run_id", BigInteger, nullable=False),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
)

# -- identity (migration 2). *_ct columns are storage.pii sealed values. --------

_ts = DateTime(timezone=True)

users = Table(
    "users",
    metadata,
    Column("id", Text, primary_key=True),
    Column("email_index", LargeBinary, nullable=False, unique=True),
    Column("email_ct", LargeBinary, nullable=False),
    Column("password_hash", Text),
    Column("name_ct", LargeBinary),
    Column("phone_ct", LargeBinary),
    Column("birth_date_ct", LargeBinary),
    Column("address_ct", LargeBinary),
    Column("kyc_status", Text, nullable=False),
    Column("kyc_id_type", Text),
    Column("kyc_id_ct", LargeBinary),
    Column("created_at", _ts, nullable=False),
    # Migration 6: the last screening and the list (digest) it was made against.
    Column("sanctions_hit", Boolean),
    Column("sanctions_list", Text),
    Column("updated_at", _ts, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, ForeignKey("users.id"), nullable=False),
    Column("created_at", _ts, nullable=False),
    Column("revoked_at", _ts),
    Column("revoked_reason", Text),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id"), nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("expires_at", _ts, nullable=False),
    Column("used_at", _ts),
    Column("created_at", _ts, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("name", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("owner_user_id", Text, ForeignKey("users.id")),
    Column("created_by", Text, nullable=False),
    Column("created_at", _ts, nullable=False),
    Column("revoked_at", _ts),
)

kyc_events = Table(
    "kyc_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", Text, ForeignKey("users.id"), nullable=False),
    Column("from_status", Text, nullable=False),
    Column("to_status", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text),
    Column("at", _ts, nullable=False),
)

# Journal rows in the order JournalRow declares its fields (COPY and loads use it).
# (txid is left to its default: PostgreSQL fills it in.)
TRANSFER_COLUMNS = tuple(c.name for c in transfers.columns if c.name != "txid")
ACCOUNT_COLUMNS = tuple(c.name for c in accounts.columns if c.name != "txid")
