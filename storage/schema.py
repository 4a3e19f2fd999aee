"""PostgreSQL schema: SQLAlchemy Core tables for ordinary queries.

The DDL that creates them lives in :mod:`storage.migrations` (versioned);
these definitions must describe the schema those migrations leave behind.
"""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    Table,
    Text,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("currency", CHAR(3), nullable=False),
    Column("flags", Integer, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("shard_key", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("debit_account_id", Text, nullable=False),
    Column("credit_account_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("flags", Integer, nullable=False),
    Column("pending_id", Text),
    Column("timeout_s", Integer, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("status", Text, nullable=False),
    Column("posted_amount", BigInteger, nullable=False),
    Column("pending_delta", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
)

# Journal rows in the order JournalRow declares its fields (COPY and loads use it).
TRANSFER_COLUMNS = tuple(c.name for c in transfers.columns)
ACCOUNT_COLUMNS = tuple(c.name for c in accounts.columns)
