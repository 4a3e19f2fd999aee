"""The embedded PostgreSQL (pgserver) that ``paynode run`` uses when DATABASE_URL is
unset, and its supervision: with the embedded default nobody else restarts it.

When its postmaster dies (an OOM kill, a crash, kill -9), ``Supervisor.check``
starts it again on the same data directory and socket: PostgreSQL replays its
WAL (crash recovery), so every committed transaction is there. Everything
else recovers as after any outage: pools reconnect (``pool_pre_ping``), the
shards resync from the journal, the ownership lock is taken again
(``Services.keep_ownership``). A server that will not start (disk full, a
damaged data directory) is retried with backoff a bounded number of times;
then the supervisor gives up and names the cause from PostgreSQL's log, and
the node exits non-zero so that a process manager can act.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("paynode.postgres")

RESTART_ATTEMPTS = 6  # then give up: the node exits non-zero
RESTART_BACKOFF_S = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)  # before each attempt: ~31 s in all
LOG_LINES_KEPT = 5  # FATAL/PANIC lines of PostgreSQL's log quoted in the cause
assert len(RESTART_BACKOFF_S) == RESTART_ATTEMPTS


def start(pgdata: Path) -> tuple[str, Any]:
    """Start (or join) the embedded server under ``pgdata``: (its URL, the server)."""
    import pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded PostgreSQL under %s", pgdata)
    return server.get_uri(), server


def _forget_dead_users(pgdata: Path) -> None:
    """Drop pids of killed nodes from pgserver's user list.

    pgserver stops PostgreSQL when its last user exits; a node killed with
    SIGKILL never deregisters, and PostgreSQL would then outlive every later
    clean shutdown.
    """
    users = pgdata / ".handle_pids.json"
    if not users.exists():
        return
    try:
        pids = json.loads(users.read_text())
    except ValueError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        users.write_text(json.dumps(alive))


@dataclass
class Supervisor:
    """Restarts the embedded server when its postmaster is gone; see the module doc."""

    server: Any  # pgserver.PostgresServer
    restarts: int = 0
    failed_attempts: int = 0  # in a row, since the last successful start
    gave_up: str | None = None  # the cause, once the supervisor stopped trying
    _next_attempt_at: float = 0.0
    _down_since: float | None = field(default=None, repr=False)

    def alive(self) -> bool:
        info = self.server._postmaster_info  # the postmaster this handle started or joined
        return info is not None and info.process is not None and info.process.is_running()

    def check(self, now: float | None = None) -> bool:
        """One supervision step; False once the supervisor has given up."""
        if self.gave_up is not None:
            return False
        if self.alive():
            return True
        now = time.monotonic() if now is None else now
        if self._down_since is None:
            self._down_since = now
            self._next_attempt_at = now + RESTART_BACKOFF_S[0]
            log.error("embedded PostgreSQL is gone (postmaster died); restarting it")
        if now < self._next_attempt_at:
            return True
        log_from = self._log_size()
        try:
            with self.server._lock:  # pgserver's inter-process lock around (re)starts
                self.server.ensure_postgres_running()
        except (subprocess.SubprocessError, OSError, AssertionError) as e:
            self.failed_attempts += 1
            cause = self._cause(e, log_from)
            if self.failed_attempts >= RESTART_ATTEMPTS:
                self.gave_up = cause
                log.critical("embedded PostgreSQL could not be restarted: %s", cause)
                return False
            delay = RESTART_BACKOFF_S[self.failed_attempts]
            log.error("embedded PostgreSQL did not start (%s); next try in %.0f s", cause, delay)
            self._next_attempt_at = now + delay
            return True
        self.restarts += 1
        log.warning(
            "embedded PostgreSQL restarted after %.1f s (crash recovery done; restart %d)",
            time.monotonic() - self._down_since, self.restarts,
        )  # fmt: skip
        self.failed_attempts = 0
        self._down_since = None
        return True

    def _log_size(self) -> int:
        try:
            return Path(self.server.log).stat().st_size
        except OSError:
            return 0

    def _cause(self, error: BaseException, log_from: int) -> str:
        """What PostgreSQL's log said during this attempt (its FATAL/PANIC lines if any,
        else its last lines: e.g. "could not open file .../global/pg_control", "No space
        left on device"), or the error. Only the start-up's own lines: the log may hold
        statements with data in them from before."""
        try:
            with open(self.server.log, "rb") as f:
                f.seek(log_from)
                said = f.read(64 * 1024).decode(errors="replace").splitlines()
        except OSError:
            said = []
        said = [ln.strip() for ln in said if ln.strip()]
        fatal = [ln for ln in said if "FATAL:" in ln or "PANIC:" in ln]
        kept = (fatal or said)[-LOG_LINES_KEPT:]
        return " / ".join(kept) or f"{type(error).__name__}: {error}"
