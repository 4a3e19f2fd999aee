"""The ``paynode`` command line: migrations and configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from paynode.storage.database import libpq_url
from paynode.storage.migrations import MIGRATIONS, latest_version


def _paynode(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paynode.node.cli", *args], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_migrate_applies_once(empty_database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    first = _paynode("migrate", env=env)
    assert first.returncode == 0, first.stderr
    all_versions = ", ".join(str(m.version) for m in MIGRATIONS)
    assert f"applied: [{all_versions}]" in first.stdout
    again = _paynode("migrate", env=env)
    assert again.returncode == 0 and "up to date" in again.stdout
    with psycopg.connect(libpq_url(env["DATABASE_URL"])) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == list(range(1, latest_version() + 1))
    # A shipped migration edited afterwards: refused with a clear error, nothing run.
    with psycopg.connect(libpq_url(env["DATABASE_URL"]), autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
    edited = _paynode("migrate", env=env)
    assert edited.returncode == 1
    assert "migration 2 (identity" in edited.stderr and "changed after" in edited.stderr


@pytest.mark.parametrize(
    ("args", "env_extra", "message"),
    [
        (["run", "--shards", "-1"], {}, "shards must be"),
        (["run", "--port", "70000"], {}, "port must be"),
        (["run"], {"PAYNODE_BATCH_MAX_INFLIGHT": "0"}, "batch_max_inflight"),
        (["run"], {"PAYNODE_BATCH_WINDOW_MS": "soon"}, "batch_window_ms must be `float`"),
        (["run"], {"PAYNODE_API_KEY": "short-secret"}, "api_key must be `str` of length >= 16"),
        (["run"], {"PAYNODE_QUEUE_LIMIT": "10"}, "queue_limit must be >= batch_max_items"),
    ],
)
def test_bad_configuration_is_refused_before_start(args, env_extra, message) -> None:
    result = _paynode(*args, env={**os.environ, **env_extra})
    assert result.returncode == 2
    assert message in result.stderr
    assert "short-secret" not in result.stderr  # a refused value is never echoed


def test_second_node_on_the_same_database_is_refused(database_url: str) -> None:
    from paynode.node.runtime import DatabaseInUse, claim_database

    owner = claim_database(database_url)
    try:
        with pytest.raises(DatabaseInUse):
            claim_database(database_url, wait_ms=0)
        env = {**os.environ, "DATABASE_URL": database_url}
        result = _paynode("run", "--port", "1", "--shards", "1", env=env)
        assert result.returncode == 2
        assert "another paynode node is running on this database" in result.stderr
    finally:
        owner.close()
    # Released with its connection (its backend exits a moment later: claim waits for it).
    claim_database(database_url).close()
