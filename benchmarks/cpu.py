"""CPU time of a process tree over a measured window: what a transfer costs the machine.

Throughput on a shared machine drifts with whatever else runs; CPU seconds
spent by the node's own processes (front, Ray, shard workers, helpers and
PostgreSQL's backends) per durable transfer do not. ``CpuMeter`` samples the
tree a few times a second so that a process that starts and exits inside the
window still counts up to its last sample.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil


@dataclass
class CpuWindow:
    """What the tree used between ``start`` and ``stop``."""

    wall_s: float
    cpu_s: float  # user + system, summed over every process of the tree
    processes: int
    by_role: dict[str, float]  # cpu seconds by process role (front, shard, postgres, ...)

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s else 0.0

    def per_unit_us(self, units: int) -> float | None:
        return self.cpu_s * 1e6 / units if units else None

    def summary(self, units: int, unit: str) -> dict:
        per = self.per_unit_us(units)
        return {
            "cpu_s": round(self.cpu_s, 3),
            "cores_used": round(self.cores, 2),
            f"cpu_us_per_{unit}": round(per, 1) if per is not None else None,
            "processes": self.processes,
            "cpu_s_by_role": {k: round(v, 3) for k, v in sorted(self.by_role.items())},
        }


def role(p: psutil.Process) -> str:
    """A short name for what a process of the node does (for the breakdown)."""
    try:
        name = p.name()
        cmd = " ".join(p.cmdline()[:4])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if name.startswith("postgres") or "postgres" in cmd.split(" ")[0]:
        # The process title says which: a client backend names its user and database.
        for kind in ("autovacuum", "walwriter", "checkpointer", "background writer", "wal"):
            if kind in cmd:
                return "postgres:" + kind.replace(" ", "")
        return "postgres:backend" if "[local]" in cmd or "127.0.0.1" in cmd else "postgres"
    if name.startswith("ray::"):  # Ray names worker processes after the actor class
        return name[5:].split(".")[0].lower()
    for tag in ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor"):
        if tag in cmd or tag in name:
            return "ray:" + tag
    if "paynode" in cmd or "uvicorn" in cmd or "multiprocessing.spawn" in cmd:
        return "front"  # the node's own process, or one of its uvicorn front workers
    return name


class CpuMeter:
    """Sample ``processes()`` every ``interval_s``; ``stop()`` returns the window's CpuWindow."""

    def __init__(self, processes: Callable[[], list[psutil.Process]], interval_s: float = 0.2):
        self._processes = processes
        self._interval_s = interval_s
        self._first: dict[tuple[int, float], float] = {}  # (pid, create time) -> cpu at start
        self._last: dict[tuple[int, float], tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    def _sample(self, first: bool) -> None:
        for p in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                key = (p.pid, p.create_time())
                t = p.cpu_times()
                used = t.user + t.system
                if first:
                    self._first[key] = used
                elif key not in self._first:
                    self._first[key] = 0.0  # started inside the window: all of it counts
                self._last[key] = (used, self._last.get(key, (0.0, ""))[1] or role(p))

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample(first=False)

    def start(self) -> CpuMeter:
        self._sample(first=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> CpuWindow:
        self._stop.set()
        self._thread.join()
        self._sample(first=False)
        wall = time.perf_counter() - self._t0
        by_role: dict[str, float] = {}
        total = 0.0
        for key, (used, name) in self._last.items():
            spent = max(0.0, used - self._first.get(key, 0.0))
            total += spent
            by_role[name] = by_role.get(name, 0.0) + spent
        return CpuWindow(wall, total, len(self._last), by_role)

    def __enter__(self) -> CpuMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.window = self.stop()
