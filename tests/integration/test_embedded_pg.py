"""The embedded PostgreSQL's supervisor, on a real pgserver: a killed postmaster is
started again with its data; one that cannot start is given up on, naming the cause."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import psycopg
import pytest

from paynode.node import embedded_pg
from tests.support.node import wait_until


@pytest.fixture
def embedded(tmp_path: Path):
    url, server = embedded_pg.start(tmp_path / "pg")
    try:
        yield url, server
    finally:
        server.cleanup()


def _kill(server) -> None:
    pid = server.get_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid), what="the postmaster to die")


def test_a_killed_postmaster_is_restarted_with_its_data(embedded) -> None:
    url, server = embedded
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")  # committed: must survive the crash
    supervisor = embedded_pg.Supervisor(server)
    assert supervisor.check() and supervisor.restarts == 0
    _kill(server)
    assert not supervisor.alive()
    assert supervisor.check()  # the first attempt is immediate
    assert supervisor.alive() and supervisor.restarts == 1 and supervisor.gave_up is None
    with psycopg.connect(url) as conn:  # same URL: same socket, same data
        assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]


def test_a_server_that_will_not_start_is_given_up_on_by_name(embedded) -> None:
    _, server = embedded
    supervisor = embedded_pg.Supervisor(server)
    _kill(server)
    control = Path(server.pgdata) / "global" / "pg_control"
    control.rename(control.with_suffix(".moved"))  # a damaged data directory
    now = 0.0
    for attempt in range(embedded_pg.RESTART_ATTEMPTS):
        now += embedded_pg.RESTART_BACKOFF_S[attempt]
        result = supervisor.check(now=now)
        assert supervisor.failed_attempts == attempt + 1
        assert result is (attempt + 1 < embedded_pg.RESTART_ATTEMPTS)
        assert supervisor.check(now=now) is result  # no attempt before the backoff is over
    assert supervisor.gave_up is not None and "pg_control" in supervisor.gave_up
    assert supervisor.check(now=now + 3600) is False  # given up stays given up
    control.with_suffix(".moved").rename(control)  # so that cleanup can stop cleanly
