"""Real components for tests: PostgreSQL (embedded unless DATABASE_URL), Ray, HTTP.

Each node fixture gets a fresh database and its own Ray namespace, and serves
the real app with uvicorn on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from paynode.domain.settings import Settings
from paynode.storage.database import libpq_url
from paynode.storage.keyring import Keyring
from paynode.storage.migrations import migrate


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``check`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@dataclass
class RunningNode:
    url: str
    database_url: str
    settings: Settings
    shards: list
    http: httpx.Client  # authenticated with the admin key
    keys: Keyring
    helpers: list  # Ray actor handles, in node.runtime.start_helpers order

    @property
    def analytics(self) -> object:
        return self.helpers[0]

    @property
    def reconciler(self) -> object:
        return self.helpers[1]

    @property
    def notifier(self) -> object:
        return self.helpers[2]

    def anonymous(self) -> httpx.Client:
        """A client with no credentials (close it, or use it in a with block)."""
        return httpx.Client(base_url=self.url, timeout=30)

    def balances(self) -> dict[str, tuple[int, int, int, int]]:
        """Every account's in-memory balances, from the shards, at a durable point."""
        import ray

        from paynode.domain.ledger.wire import decode_balances

        out = {}
        for raw in ray.get([s.balances.remote() for s in self.shards]):
            for b in decode_balances(raw) or []:
                assert b is not None
                out[b.id] = (b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending)
        return out


ADMIN_KEY = "test-admin-key-not-a-secret-0123456789"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


class NodeStarter:
    """Starts nodes (shards, helpers and the HTTP front) on one database, and stops them all."""

    def __init__(self, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.database_url = database_url
        self.tmp_path_factory = tmp_path_factory
        self.running: list[tuple[Any, threading.Thread, list]] = []

    def __call__(self, shards: int = 2, **overrides: object) -> RunningNode:
        import uvicorn

        from paynode.api.app import create_app
        from paynode.node.runtime import start_helpers, start_shards, with_bank_secret
        from paynode.storage.keyring import load

        # Bound now and handed to uvicorn: a port picked, released and bound later can be
        # taken in between (by Ray's own ports, say).
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        values: dict = {
            "shards": shards,
            "database_url": self.database_url,
            "namespace": f"t{uuid.uuid4().hex[:10]}",
            "port": sock.getsockname()[1],
            "api_key": ADMIN_KEY,
            "data_dir": str(self.tmp_path_factory.mktemp("node")),
        }
        settings = with_bank_secret(Settings(**(values | overrides)))
        names, handles = start_shards(settings, self.database_url)
        helpers = start_helpers(settings, self.database_url, names)
        keys = load(settings.data_path(), settings.keyring)
        app = create_app(settings, names, keys)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        self.running.append((server, thread, helpers + handles))
        wait_until(lambda: server.started, what="uvicorn to start")
        url = f"http://127.0.0.1:{settings.port}"
        http = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {settings.api_key}"}
        )
        return RunningNode(url, self.database_url, settings, handles, http, keys, helpers)

    def stop_all(self) -> None:
        import ray

        for server, thread, handles in self.running:
            server.should_exit = True
            thread.join(timeout=15)
            for h in handles:
                with contextlib.suppress(Exception):
                    ray.get(h.stop.remote(), timeout=5)
                ray.kill(h)
        self.running.clear()


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
