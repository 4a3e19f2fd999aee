"""A local Ray cluster (head + worker nodes, all on 127.0.0.1, token auth) and the node
in cluster mode on it (``paynode actors`` + ``paynode api --workers N``), run as
processes and watched from outside: the cluster test and the cluster benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from paynode.benchmarks.node_process import kill_all, total_rss

_ROOT = Path(__file__).resolve().parents[1]
_RAY = str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """``ray start --head`` plus ``workers`` more nodes, each a raylet of its own."""

    def __init__(self, workers: int = 1, head_cpus: int = 2, worker_cpus: int = 1):
        self.address = ""  # host:port of the head's GCS, known once started
        self.workers = workers
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.token = secrets.token_hex(32)
        # Short: Ray puts unix sockets under it (108-byte limit). Unique: how we find
        # (and stop) exactly this cluster's processes, never another Ray on the machine.
        self.temp_dir = tempfile.mkdtemp(prefix="pnray")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # fmt: skip
        return env | extra

    def start(self) -> None:
        common = ["--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        # --port=0: the head binds a free port itself and says which (no port picked here,
        # released and bound by Ray later, which another process could take in between).
        head = subprocess.run(
            [_RAY, "start", "--head", "--port=0", f"--num-cpus={self.head_cpus}",
             "--include-dashboard=false", *common],
            env=self.env(), check=True, capture_output=True, timeout=180, text=True,
        )  # fmt: skip
        # `ray start` records the head's address in its temp dir (ours alone).
        written = Path(self.temp_dir, "ray_current_cluster")
        address = written.read_text().strip() if written.exists() else ""
        if re.fullmatch(r"127\.0\.0\.1:[1-9]\d*", address) is None:
            self.stop()
            raise RuntimeError(f"ray start --head left no loopback address ({address!r}):\n"
                               f"{head.stdout[-2000:]}")  # fmt: skip
        self.address = address
        for _ in range(self.workers):
            subprocess.run(
                [sys.executable, "-m", "paynode.benchmarks.loopback_ray", "start",
                 f"--address={self.address}", f"--num-cpus={self.worker_cpus}", *common],
                env=self.env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1"), check=True,
                capture_output=True, timeout=180,
            )  # fmt: skip

    def nodes(self) -> list[dict]:
        """What the cluster says about its nodes (asked from a fresh driver)."""
        script = (
            "import json, ray; ray.init(address='auto', logging_level='ERROR');"
            "print(json.dumps([{'address': n['NodeManagerAddress'], 'alive': n['Alive'],"
            " 'id': n['NodeID']} for n in ray.nodes()]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], env=self.env(RAY_ADDRESS=self.address),
            check=True, capture_output=True, timeout=120, text=True,
        )  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])

    def processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.NoSuchProcess):
                if any(self.temp_dir in a for a in p.info["cmdline"] or []):
                    for q in [p, *p.children(recursive=True)]:
                        found[q.pid] = q
        return list(found.values())

    def listening_addresses(self) -> set[str]:
        """Local addresses this cluster's processes listen on (TCP)."""
        out = set()
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                for c in p.net_connections(kind="tcp"):
                    if c.status == psutil.CONN_LISTEN:
                        out.add(c.laddr.ip.removeprefix("::ffff:"))
        return out

    def stop(self) -> None:
        """Kill this cluster's processes only (``ray stop`` would stop every Ray here)."""
        kill_all(self.processes())


class ClusterNode:
    """``paynode actors`` and ``paynode api --workers N`` on a :class:`RayCluster`."""

    def __init__(
        self,
        cluster: RayCluster,
        database_url: str,
        data_dir: Path,
        shards: int = 2,
        api_workers: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        # Bound here and handed to every `paynode api` started on it (--fd): a port picked,
        # released and bound later could be taken in between (by Ray's own ports, say).
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2048)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.api_workers = api_workers
        self.env = cluster.env(
            RAY_ADDRESS=cluster.address, DATABASE_URL=database_url,
            PAYNODE_DATA_DIR=str(data_dir), PAYNODE_SHARDS=str(shards),
            **(env or {}),
        )  # fmt: skip
        self.actors: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.logs: dict[str, Path] = {}

    def _spawn(self, *args: str) -> subprocess.Popen:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / f"{args[0]}-{time.time_ns()}.log"
        self.logs[args[0]] = path
        with open(path, "wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "paynode.node.cli", *args], stdout=log,
                stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                pass_fds=(self.sock.fileno(),),
            )  # fmt: skip

    def start_actors(self, timeout: float = 180.0) -> None:
        self.actors = self._spawn("actors")
        self._wait(self.actors, "actors", lambda: b"actors ready" in self.log("actors"), timeout)

    def start_api(self, timeout: float = 180.0) -> None:
        self.api = self._spawn("api", "--fd", str(self.sock.fileno()), "--workers",
                               str(self.api_workers))  # fmt: skip
        self._wait(self.api, "api", self.ready, timeout)

    def log(self, name: str) -> bytes:
        return self.logs[name].read_bytes()

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, proc: subprocess.Popen, what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if proc.poll() is not None:
                tail = self.log(what)[-3000:].decode(errors="replace")
                raise RuntimeError(f"paynode {what} exited during start-up:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"paynode {what} not ready in time")
            time.sleep(0.2)

    def api_workers_pids(self) -> list[int]:
        if self.api is None or self.api.poll() is not None:
            return []
        pids = []
        for child in psutil.Process(self.api.pid).children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except psutil.Error:  # a killed worker is a zombie until uvicorn reaps it
                continue
        return pids

    def rss_bytes(self) -> int:
        procs = self.cluster.processes()
        for p in (self.actors, self.api):
            if p is not None and p.poll() is None:
                root = psutil.Process(p.pid)
                procs += [root, *root.children(recursive=True)]
        return total_rss(list({p.pid: p for p in procs}.values()))

    def stop(self, timeout: float = 60.0) -> dict[str, int | None]:
        """SIGTERM the API, then the actors (which stop the actors they started)."""
        codes: dict[str, int | None] = {}
        for name in ("api", "actors"):
            proc = getattr(self, name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = None
        self.sock.close()
        return codes
