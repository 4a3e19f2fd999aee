"""Fixtures for every tier: PostgreSQL (embedded unless DATABASE_URL), Ray, nodes.

Tiers: ``tests/unit`` (no I/O beyond files and subprocesses of pure code),
``tests/integration`` (PostgreSQL, Ray or DuckDB, no node), ``tests/system`` (whole
nodes, in this process or as process trees). Helpers live in ``tests/support``.

Each test database is a copy of one migrated template. A node gets its own Ray namespace
and serves the real app with uvicorn on a socket bound before it starts.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from paynode.domain.settings import Settings
from paynode.node.runtime import ray_environment
from paynode.storage.database import libpq_url
from paynode.storage.migrations import migrate
from tests.support.node import NodeStarter, RunningNode

# Before any test module imports Ray (the simulator's tests do, by importing the shard):
# Ray reads its loopback and authentication settings once, at import.
ray_environment()


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server to create test databases on: DATABASE_URL, or an embedded one."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def migrated_template(pg_admin_url: str) -> Iterator[str]:
    """A database migrated once per session, that every test's database is copied from
    (``CREATE DATABASE ... TEMPLATE``: a file copy, where migrating costs seconds)."""
    name = f"paynode_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(_with_database(pg_admin_url, name))
    try:
        yield name
    finally:
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _scratch_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """A new database (a copy of ``template``, or empty), dropped afterwards."""
    name = f"paynode_test_{uuid.uuid4().hex[:12]}"
    like = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{like}')
    try:
        yield _with_database(admin_url, name)
    finally:
        with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_admin_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    with _scratch_database(pg_admin_url, migrated_template) as url:
        yield url


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database with nothing in it (migrations under test), dropped afterwards."""
    with _scratch_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from paynode.node.runtime import start_ray

    settings = Settings(data_dir=str(tmp_path_factory.mktemp("ray")), shards=2)
    started = start_ray(settings)  # sets Ray's token auth up before Ray is imported
    import ray

    try:
        yield
    finally:
        if started:
            ray.shutdown()


@pytest.fixture
def make_node(
    ray_session: None, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeStarter]:
    """Start a node (shards + HTTP front) on the test's database; stop it afterwards."""
    starter = NodeStarter(database_url, tmp_path_factory)
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def shared_node(
    request: pytest.FixtureRequest,
    ray_session: None,
    pg_admin_url: str,
    migrated_template: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningNode]:
    """One node for every test of a module that asks for it: a node start costs seconds.

    Tests on it must not depend on what the others did: each uses ids, emails and keys of
    its own, and asserts on what changed (counts before and after), never on totals. A
    module's ``SHARED_NODE_SETTINGS`` (a dict) overrides settings for its node.
    """
    overrides = getattr(request.module, "SHARED_NODE_SETTINGS", {})
    with _scratch_database(pg_admin_url, migrated_template) as url:
        starter = NodeStarter(url, tmp_path_factory)
        try:
            yield starter(**overrides)
        finally:
            starter.stop_all()


@pytest.fixture
def node(request: pytest.FixtureRequest) -> RunningNode:
    """A node of this test's own, or, in a module that sets ``SHARED_NODE_SETTINGS``, the
    module's shared node (see ``shared_node``)."""
    if hasattr(request.module, "SHARED_NODE_SETTINGS"):
        return request.getfixturevalue("shared_node")
    return request.getfixturevalue("make_node")()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The multi-process tests first, each file kept together: spread over workers, the
    longest files start early instead of leaving one worker busy at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
