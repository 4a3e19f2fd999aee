"""A ``paynode run`` process tree, started and watched from outside (bench and tests)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil


def process_tree(root_pid: int, pgdata: Path | None) -> list[psutil.Process]:
    """A process and its descendants, plus the embedded postmaster's tree under ``pgdata``."""
    root = psutil.Process(root_pid)
    found = [root, *root.children(recursive=True)]
    pidfile = pgdata / "postmaster.pid" if pgdata else None
    if pidfile is not None and pidfile.exists():
        with contextlib.suppress(psutil.NoSuchProcess, ValueError):
            postmaster = psutil.Process(int(pidfile.read_text().split()[0]))
            found += [postmaster, *postmaster.children(recursive=True)]
    return found


def kill_all(victims: list[psutil.Process], timeout: float = 30.0) -> int:
    """SIGKILL every process at once, then wait for them; returns how many there were."""
    for v in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            v.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=timeout)
    return len(victims)


def total_rss(processes: list[psutil.Process]) -> int:
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


class NodeProcess:
    """Start ``paynode run`` on ``data_dir``; know its URL, database and processes."""

    def __init__(
        self,
        data_dir: Path,
        shards: int,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``tls``: (certificate, key) PEM files: the node serves HTTPS, and clients
        verify it with ``verify`` (the certificate itself: self-signed)."""
        self.data_dir = data_dir
        self.tls = tls
        self.verify: str | bool = str(tls[0]) if tls else True
        self.cwd = cwd
        # Bound here and handed to every incarnation of the node (--fd): a port picked,
        # released and bound again later can be taken in between, and a restarted node
        # gets the same address.
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.shards = shards
        self.env = {k: v for k, v in (env or os.environ).items() if not k.startswith("RAY_AUTH")}
        self.proc: subprocess.Popen | None = None
        self._down = threading.Event()  # set while no node serves the socket
        self._drainer: threading.Thread | None = None

    def _refuse_while_down(self) -> None:
        """Reset every connection that reaches the socket while no node runs.

        The socket stays bound between incarnations, so the kernel would queue
        connections for the next one, which would then execute requests their
        clients gave up on long before. A stopped node must look stopped.
        """
        self.sock.setblocking(False)  # no node shares the socket now
        while self._down.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            with contextlib.suppress(BlockingIOError, InterruptedError):
                conn, _ = self.sock.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # RST: the client sees its request fail at once

    def _went_down(self) -> None:
        if self._drainer is None:
            self._down.set()
            self._drainer = threading.Thread(target=self._refuse_while_down, daemon=True)
            self._drainer.start()

    @property
    def pgdata(self) -> Path | None:
        return None if self.env.get("DATABASE_URL") else self.data_dir / "pg"

    @property
    def database_url(self) -> str:
        if self.env.get("DATABASE_URL"):
            return self.env["DATABASE_URL"]
        return f"postgresql://postgres:@/postgres?host={self.pgdata}"

    def start(self, timeout: float = 180.0) -> None:
        if self._drainer is not None:
            self._down.clear()
            self._drainer.join()
            self._drainer = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / f"node-{time.time_ns()}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paynode.node.cli", "run", "--data-dir", str(self.data_dir),
             "--fd", str(self.sock.fileno()), "--shards", str(self.shards),
             *(["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
               if self.tls else [])],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            pass_fds=(self.sock.fileno(),), cwd=self.cwd,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                log.close()
                tail = Path(log.name).read_bytes()[-3000:].decode(errors="replace")
                raise RuntimeError(f"node exited during start-up; {log.name} ends:\n{tail}")
            try:
                ready = httpx.get(self.url + "/ready", timeout=2, verify=self.verify)
                if ready.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("node not ready in time")
            time.sleep(0.2)

    def processes(self) -> list[psutil.Process]:
        """The node, its descendants (Ray, shard workers) and the embedded postmaster's tree."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return process_tree(self.proc.pid, self.pgdata)

    def rss_bytes(self) -> int:
        return total_rss(self.processes())

    def kill(self) -> int:
        """SIGKILL the whole tree (and the embedded postmaster) at once."""
        killed = kill_all(self.processes())
        if self.proc is not None:
            self.proc.wait(timeout=30)
        self._went_down()
        return killed

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the node stops Ray and PostgreSQL itself. Returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.kill()
            self._went_down()


class PeakRss:
    """Samples ``rss()`` (bytes) in the background; ``peak`` is the maximum seen."""

    def __init__(self, rss: Callable[[], int], interval: float = 0.25) -> None:
        self.rss = rss
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
