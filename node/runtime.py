"""Start-up and shut-down of the node's processes: PostgreSQL, Ray, the shard actors.

The order matters: the journal (PostgreSQL) and its schema first, then Ray,
then the shards (each rebuilds its accounts from the journal before it is
ready), and only then the HTTP front. Shut-down runs in reverse and stops
only what this process started.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psutil
import psycopg

from storage.database import libpq_url
from storage.migrations import migrate

from .config import Settings
from .keyring import load as load_keyring

log = logging.getLogger("paynode.node")

SHARD_NAME = "paynode-shard-{index}"


class DatabaseInUse(RuntimeError):
    """Another node owns this database: two sets of shards would both decide its accounts."""


_OWNER_LOCK = 0x7061796E6F6465 + 1  # next to the migration lock's key


def claim_database(database_url: str) -> psycopg.Connection:
    """Hold a session advisory lock for as long as this node runs.

    PostgreSQL drops it when the connection dies, so a killed node never
    blocks its own restart.
    """
    conn = psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=10)
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_OWNER_LOCK,)).fetchone()
    if not row or not row[0]:
        conn.close()
        raise DatabaseInUse("another paynode node is running on this database")
    return conn


@dataclass
class Services:
    settings: Settings
    database_url: str
    shard_names: list[str]
    shards: list[object] = field(default_factory=list)
    helpers: list[object] = field(default_factory=list)  # analytics, reconciler, notifier
    _pg: object | None = None
    _ray_started: bool = False
    _owner: psycopg.Connection | None = None

    def stop(self) -> None:
        import ray

        for h in self.helpers:
            try:
                ray.get(h.stop.remote(), timeout=10)
            except Exception as e:  # going away anyway
                log.warning("a helper actor did not stop cleanly: %s", type(e).__name__)
            ray.kill(h)
        self.helpers = []
        if self.shards:
            try:
                ray.get([s.stop.remote() for s in self.shards], timeout=10)
            except Exception as e:  # the process is going away; log and carry on
                log.warning("shards did not stop cleanly: %s", type(e).__name__)
            for s in self.shards:
                ray.kill(s)
            self.shards = []
        if self._ray_started:
            ray.shutdown()
            self._ray_started = False
        if self._owner is not None:
            self._owner.close()
            self._owner = None
        if self._pg is not None:
            self._pg.cleanup()  # type: ignore[attr-defined]
            self._pg = None


def start_postgres(settings: Settings) -> tuple[str, object | None]:
    """The DATABASE_URL to use, and the embedded server if this process started one."""
    if settings.database_url:
        return settings.database_url, None
    import pgserver

    pgdata = settings.data_path() / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    url = server.get_uri()
    log.info("embedded PostgreSQL under %s", pgdata)
    return url, server


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


def ray_token(settings: Settings) -> str:
    """Ray's auth token: from RAY_AUTH_TOKEN, else one kept (0600) in the data directory."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = settings.data_path() / "ray-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return Path(path).read_text().strip()


def start_ray(settings: Settings) -> bool:
    """Connect to RAY_ADDRESS, or start a local Ray on 127.0.0.1 with token auth."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray starts workers at nice 15; shards hold the commit path and must not
    # lose the CPU to the front or a load generator on the same machine.
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = ray_token(settings)
    import ray

    if ray.is_initialized():
        return False
    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=settings.namespace,
                 logging_level="WARNING")  # fmt: skip
        return True
    ray.init(
        address="local",
        namespace=settings.namespace,
        num_cpus=max(2, settings.shard_count()),
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=True,
    )
    for node in ray.nodes():
        assert node["NodeManagerAddress"] == "127.0.0.1", "Ray must stay on loopback"
    return True


def start_shards(settings: Settings, database_url: str) -> tuple[list[str], list[object]]:
    """Create the shard actors, let each rebuild from the journal, and introduce them."""
    import ray

    from actors.ledger_shard import LedgerShard

    count = settings.shard_count()
    names = [SHARD_NAME.format(index=i) for i in range(count)]
    remote = ray.remote(LedgerShard)
    shards = [
        remote.options(
            name=name,
            namespace=settings.namespace,
            num_cpus=0,
            max_concurrency=10_000,
            max_restarts=0,
        ).remote(
            i,
            count,
            database_url,
            settings.namespace,
            settings.commit_max_rows,
            settings.expiry_interval_ms,
        )
        for i, name in enumerate(names)
    ]
    loaded = ray.get([s.start.remote() for s in shards])
    ray.get([s.set_peers.remote(names) for s in shards])
    log.info("%d shards ready, %d accounts", count, sum(loaded))
    return names, shards


ANALYTICS_NAME = "paynode-analytics"
RECONCILER_NAME = "paynode-reconciler"
NOTIFIER_NAME = "paynode-notifier"
HANDLES_NAME = "paynode-handles"
ACH_NAME = "paynode-ach"
BANK_SIM_NAME = "paynode-banksim"
RISK_NAME = "paynode-risk"


def resolved_paths(settings: Settings) -> Settings:
    """Settings whose paths mean the same in an actor (its working directory differs)."""
    keyring = str(Path(settings.keyring).expanduser().resolve()) if settings.keyring else ""
    return msgspec.structs.replace(settings, data_dir=str(settings.data_path()), keyring=keyring)


def start_helpers(settings: Settings, database_url: str, shard_names: list[str]) -> list[object]:
    """The analytics follower, the reconciler (after the shards: it reads them), the notifier
    and the handle directory."""
    import ray

    from actors.ach import AchOriginator
    from actors.analytics import AnalyticsStreamer
    from actors.handles import HandleDirectory
    from actors.notifier import Notifier
    from actors.reconciler import Reconciler
    from actors.risk.actor import RiskActor

    options = {"namespace": settings.namespace, "num_cpus": 0, "max_restarts": 0}
    analytics = (
        ray.remote(AnalyticsStreamer)
        .options(name=ANALYTICS_NAME, max_concurrency=16, **options)
        .remote(
            database_url,
            str(settings.analytics_path()),
            settings.analytics_interval_ms,
            settings.analytics_max_rows,
            settings.analytics_max_segments,
        )
    )
    ray.get(analytics.start.remote())
    reconciler = (
        ray.remote(Reconciler)
        .options(name=RECONCILER_NAME, max_concurrency=16, **options)
        .remote(
            database_url,
            str(settings.analytics_path()),
            shard_names,
            ANALYTICS_NAME,
            settings.namespace,
            settings.recon_interval_s,
            settings.recon_full_every,
        )
    )
    ray.get(reconciler.start.remote())
    load_keyring(settings.data_path(), settings.keyring)  # exists before the notifier reads it
    notifier = (
        ray.remote(Notifier)
        .options(name=NOTIFIER_NAME, max_concurrency=1000, **options)
        .remote(resolved_paths(settings), database_url)
    )
    ray.get(notifier.start.remote())
    handles = (
        ray.remote(HandleDirectory)
        .options(name=HANDLES_NAME, max_concurrency=1000, **options)
        .remote(database_url)
    )
    ray.get(handles.start.remote())  # warm: every live handle in memory before the API opens
    helpers = [analytics, reconciler, notifier, handles]
    bank_name = None
    if settings.bank_simulator:
        helpers.append(_start_bank_simulator(settings, options))
        bank_name = BANK_SIM_NAME
    ach = (
        ray.remote(AchOriginator)
        .options(name=ACH_NAME, max_concurrency=16, **options)
        .remote(resolved_paths(settings), database_url, bank_name)
    )
    ray.get(ach.start.remote())
    helpers.append(ach)
    risk = (
        ray.remote(RiskActor)
        .options(name=RISK_NAME, max_concurrency=8, **options)
        .remote(
            settings.risk_rules, settings.risk_limits, settings.sanctions_sdn,
            settings.sanctions_alt, settings.sanctions_threshold,
        )
    )  # fmt: skip
    ray.get(risk.ping.remote())  # a bad rules, limits or list file stops the start here
    helpers.append(risk)
    return helpers


def _start_bank_simulator(settings: Settings, options: dict) -> object:
    """The simulated bank, and the secret it signs its webhooks with (added to ours)."""
    import ray

    from actors.bank_sim import PROVIDER, BankSimulator

    providers = settings.providers()
    if PROVIDER not in providers:
        # Mutated in place: the HTTP front created afterwards reads the same settings.
        providers[PROVIDER] = secrets.token_urlsafe(32)
        settings.webhook_providers = json.dumps(providers)
    returns = json.loads(settings.bank_sim_returns) if settings.bank_sim_returns else None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    sim = (
        ray.remote(BankSimulator)
        .options(name=BANK_SIM_NAME, max_concurrency=100, **options)
        .remote(
            f"http://{host}:{settings.port}", providers[PROVIDER], settings.bank_sim_delay_s,
            settings.ach_odfi_routing, returns,
        )
    )  # fmt: skip
    ray.get(sim.ping.remote())
    return sim


def start(settings: Settings) -> Services:
    database_url, pg = start_postgres(settings)
    services = Services(settings, database_url, [], _pg=pg)
    try:
        services._owner = claim_database(database_url)
        applied = migrate(database_url)
        if applied:
            log.info("applied migrations %s", applied)
        services._ray_started = start_ray(settings)
        services.shard_names, services.shards = start_shards(settings, database_url)
        services.helpers = start_helpers(settings, database_url, services.shard_names)
    except BaseException:
        services.stop()
        raise
    return services
