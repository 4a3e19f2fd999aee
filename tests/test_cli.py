"""The ``paynode`` command line: migrations and configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest

from paynode.storage.database import libpq_url
from paynode.storage.migrations import MIGRATIONS, latest_version
from tests.conftest import _with_database


def _paynode(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paynode.node.cli", *args], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_migrate_applies_once(pg_admin_url: str) -> None:
    name = f"paynode_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {**os.environ, "DATABASE_URL": _with_database(pg_admin_url, name)}
        first = _paynode("migrate", env=env)
        assert first.returncode == 0, first.stderr
        all_versions = ", ".join(str(m.version) for m in MIGRATIONS)
        assert f"applied: [{all_versions}]" in first.stdout
        again = _paynode("migrate", env=env)
        assert again.returncode == 0 and "up to date" in again.stdout
        with psycopg.connect(libpq_url(env["DATABASE_URL"])) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == list(range(1, latest_version() + 1))
    finally:
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    ("args", "env_extra", "message"),
    [
        (["run", "--shards", "-1"], {}, "shards must be"),
        (["run", "--port", "70000"], {}, "port must be"),
        (["run"], {"PAYNODE_BATCH_MAX_INFLIGHT": "0"}, "batch_max_inflight"),
        (["run"], {"PAYNODE_BATCH_WINDOW_MS": "soon"}, "Expected `float`"),
    ],
)
def test_bad_configuration_is_refused_before_start(args, env_extra, message) -> None:
    result = _paynode(*args, env={**os.environ, **env_extra})
    assert result.returncode == 2
    assert message in result.stderr


def test_second_node_on_the_same_database_is_refused(database_url: str) -> None:
    from paynode.node.runtime import DatabaseInUse, claim_database

    owner = claim_database(database_url)
    try:
        with pytest.raises(DatabaseInUse):
            claim_database(database_url)
        env = {**os.environ, "DATABASE_URL": database_url}
        result = _paynode("run", "--port", "1", "--shards", "1", env=env)
        assert result.returncode == 2
        assert "another paynode node is running on this database" in result.stderr
    finally:
        owner.close()
    claim_database(database_url).close()  # released with its connection
