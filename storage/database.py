"""Connections: one place that turns a DATABASE_URL into engines and connections."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def _sqlalchemy_url(database_url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def libpq_url(database_url: str) -> str:
    """The URL psycopg wants (SQLAlchemy's driver suffix removed)."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def sync_engine(database_url: str) -> sa.Engine:
    return sa.create_engine(_sqlalchemy_url(database_url), pool_pre_ping=True)


def async_engine(database_url: str, pool_size: int = 8, name: str = "paynode") -> AsyncEngine:
    """A bounded pool; ``name`` is the connections' application_name (pg_stat_activity)."""
    return create_async_engine(
        _sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=5,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5, "application_name": name},
    )


async def connect(database_url: str, name: str = "paynode") -> psycopg.AsyncConnection:
    """A raw psycopg connection for the hot path (COPY), with bounded waits; ``name`` is
    its application_name, so an operator sees in pg_stat_activity who holds it."""
    conn = await psycopg.AsyncConnection.connect(
        libpq_url(database_url),
        autocommit=False,
        connect_timeout=5,
        application_name=name,
        options="-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000",
    )
    return conn
