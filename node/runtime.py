"""Start-up and shut-down of the node's processes: PostgreSQL, Ray, the shard actors.

The order matters: the journal (PostgreSQL) and its schema first, then Ray,
then the shards (each rebuilds its accounts from the journal before it is
ready), and only then the HTTP front. Shut-down runs in reverse and stops
only what this process started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from paynode.actors.names import (
    ACH_NAME,
    AGGREGATOR_SIM_NAME,
    ANALYTICS_NAME,
    BANK_SIM_NAME,
    CHECKPOINTER_NAME,
    FOLLOWERS_HOST,
    HANDLES_NAME,
    HOSTS,
    LOOKUPS_HOST,
    NOTIFIER_NAME,
    RECONCILER_NAME,
    RISK_NAME,
    SHARD_NAME,
)
from paynode.domain.settings import Settings, replace
from paynode.node import embedded_pg
from paynode.storage.database import libpq_url
from paynode.storage.keyring import load as load_keyring
from paynode.storage.migrations import migrate

if TYPE_CHECKING:
    from pgserver import PostgresServer

log = logging.getLogger("paynode.node")


class DatabaseInUse(RuntimeError):
    """Another node owns this database: two sets of shards would both decide its accounts."""


_OWNER_LOCK = 0x7061796E6F6465 + 1  # next to the migration lock's key


def claim_database(database_url: str, wait_ms: int = 2000) -> psycopg.Connection:
    """Hold a session advisory lock for as long as this node runs.

    PostgreSQL drops it when the connection dies, so a killed node never
    blocks its own restart; but its backend exits a moment after the client's
    socket closes, so a held lock is asked again for up to ``wait_ms``.
    """
    conn = psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=10)
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_OWNER_LOCK,)).fetchone()
        if row and row[0]:
            return conn
        if time.monotonic() >= deadline:
            conn.close()
            raise DatabaseInUse("another paynode node is running on this database")
        time.sleep(0.02)


@dataclass
class Services:
    settings: Settings
    database_url: str
    shard_names: list[str]
    # Actor handles (Any: a method's .remote() is found at run time).
    shards: list[Any] = field(default_factory=list)
    helpers: list[Any] = field(default_factory=list)  # the service hosts (actors/host.py)
    _pg: PostgresServer | None = None
    _ray_started: bool = False
    _owner: psycopg.Connection | None = None
    _supervisor: embedded_pg.Supervisor | None = None

    def keep_database(self) -> str | None:
        """Restart the embedded PostgreSQL if it died; the cause once that is given up on
        (the node must then exit non-zero). An outside server is its supervisor's job."""
        if self._pg is None:
            return None
        if self._supervisor is None:
            self._supervisor = embedded_pg.Supervisor(self._pg)
        self._supervisor.check()
        return self._supervisor.gave_up

    def database_lost(self) -> str | None:
        """Why the embedded PostgreSQL could not be restarted, if it could not."""
        return None if self._supervisor is None else self._supervisor.gave_up

    def keep_ownership(self) -> None:
        """Take the ownership lock again if PostgreSQL restarted (the session holding it
        died with the server). Another node that took the database meanwhile means two
        deciders for the same accounts: this node stops rather than race it."""
        if self._owner is None or self._owner_alive():
            return
        try:
            self._owner = claim_database(self.database_url)
            log.info("database ownership lock taken again after a PostgreSQL restart")
        except DatabaseInUse:
            log.critical("another node owns this database now; stopping this one")
            os.kill(os.getpid(), signal.SIGTERM)
        except psycopg.Error:
            pass  # still down: the next check tries again

    def _owner_alive(self) -> bool:
        """True while the owner session is alive (nothing to do)."""
        assert self._owner is not None
        try:
            self._owner.execute("SELECT 1")
            return True
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                self._owner.close()
            return False

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
            self._pg.cleanup()
            self._pg = None


def start_postgres(settings: Settings) -> tuple[str, PostgresServer | None]:
    """The DATABASE_URL to use, and the embedded server if this process started one."""
    if settings.database_url:
        return settings.database_url, None
    return embedded_pg.start(settings.data_path() / "pg")


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


def ray_environment() -> None:
    """Set what Ray reads once, when it is imported: loopback only, token authentication,
    workers not niced. A process that imports Ray before ``start_ray`` (a test runner, a
    plugin) calls this first, or its Ray would start without them."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray starts workers at nice 15; shards hold the commit path and must not
    # lose the CPU to the front or a load generator on the same machine.
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ["RAY_AUTH_MODE"] = "token"


def start_ray(settings: Settings) -> bool:
    """Connect to RAY_ADDRESS, or start a local Ray on 127.0.0.1 with token auth."""
    if "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE") != "token":
        raise RuntimeError("Ray was imported before start_ray: call ray_environment() first")
    ray_environment()
    os.environ["RAY_AUTH_TOKEN"] = ray_token(settings)  # read when Ray connects
    import ray

    if ray.is_initialized():
        return False
    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=settings.namespace,
                 logging_level=logging.WARNING)  # fmt: skip
        return True
    with contextlib.nullcontext() if settings.ray_dashboard else _without_head_daemons():
        ray.init(
            address="local",
            namespace=settings.namespace,
            num_cpus=max(2, settings.shard_count()),
            include_dashboard=settings.ray_dashboard,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    for node in ray.nodes():
        assert node["NodeManagerAddress"] == "127.0.0.1", "Ray must stay on loopback"
    return True


@contextlib.contextmanager
def _without_head_daemons() -> Iterator[None]:
    """Start a local Ray head without its autoscaler monitor and dashboard API server.

    ``ray.init`` starts both whatever ``include_dashboard`` says (the API server then
    serves only usage statistics), ~120 MB of Python idle on a node that autoscales
    nothing and serves no dashboard. Ray has the switch (``RayParams.no_monitor``) but
    ``ray.init`` does not pass it through, so the two start methods of Ray's ``Node``
    are skipped while the head starts; Ray handles a head without a dashboard (no URL
    recorded), as when the dashboard fails to start. Log monitor, GCS, raylet and the
    agents the raylet needs stay. If a Ray release renames the methods, the daemons
    simply start as before.
    """
    from ray._private import node as ray_node

    cls = ray_node.Node
    saved = {name: getattr(cls, name, None) for name in ("start_monitor", "start_api_server")}
    for name, method in saved.items():
        if method is not None:
            setattr(cls, name, lambda self, *args, **kwargs: None)
    try:
        yield
    finally:
        for name, method in saved.items():
            if method is not None:
                setattr(cls, name, method)


def _actor_options(settings: Settings, detached: bool) -> dict:
    """Options shared by every actor of the node.

    Detached actors (cluster mode) outlive the process that created them, so
    API processes on any machine can find them by name.
    """
    options: dict = {"namespace": settings.namespace, "num_cpus": 0}
    if detached:
        options["lifetime"] = "detached"
    return options


def _evict(names: list[str], namespace: str) -> None:
    """Kill the named actors left by an earlier ``paynode actors`` (they resume from
    PostgreSQL and the data directory when started again)."""
    import ray

    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace))
        except ValueError:
            continue  # not running
        wait_until_gone(name, namespace)


def wait_until_gone(name: str, namespace: str, timeout: float = 30.0) -> None:
    import time

    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"actor {name} still registered {timeout:.0f} s after it was killed")


def start_shards(
    settings: Settings, database_url: str, detached: bool = False
) -> tuple[list[str], list[Any]]:
    """Create (or adopt) the shard actors and let each rebuild from the journal.

    Ray restarts a crashed shard (``shard_max_restarts``); the new
    incarnation rebuilds from the journal on its first message, and calls
    that were in flight when it died fail (the front answers them 503).
    """
    import ray

    from paynode.actors.ledger_shard import LedgerShard

    count = settings.shard_count()
    names = [SHARD_NAME.format(index=i) for i in range(count)]
    remote = ray.remote(LedgerShard)
    shards: list[Any] = [
        remote.options(
            name=name,
            max_concurrency=10_000,
            max_restarts=settings.ledger.shard_max_restarts,
            max_task_retries=0,  # a lost answer is the client's to retry, by transfer id
            # A restarted `paynode actors` adopts the running shards (and their memory).
            get_if_exists=detached,
            # Across machines: each shard's memory and commit path on a node of its own.
            scheduling_strategy="SPREAD" if detached else "DEFAULT",
            **_actor_options(settings, detached),
        ).remote(
            i,
            count,
            database_url,
            settings.namespace,
            settings.ledger.commit_max_rows,
            settings.ledger.expiry_interval_ms,
            names,
            settings.ledger.id_window,
            settings.ledger.max_accounts,
            trace_endpoint=settings.trace_endpoint,
        )
        for i, name in enumerate(names)
    ]
    loaded = ray.get([s.start.remote() for s in shards])
    found = ray.get([s.identity.remote() for s in shards])
    for i, (index, shards_seen, _) in enumerate(found):
        if (index, shards_seen) != (i, count):
            raise RuntimeError(
                f"shard actor {names[i]} is shard {index} of {shards_seen}, not {i} of {count}: "
                "the running actors were started with another shard count"
            )
    log.info("%d shards ready, %d accounts", count, sum(loaded))
    return names, shards


def find_shards(namespace: str) -> list[str]:
    """Names of the shard actors a ``paynode actors`` process started (cluster mode)."""
    import ray

    first: Any = ray.get_actor(SHARD_NAME.format(index=0), namespace=namespace)
    _, count, _ = ray.get(first.identity.remote(), timeout=60)
    return [SHARD_NAME.format(index=i) for i in range(count)]


def resolved_keyring(settings: Settings) -> str:
    """The keyring path as it means in an actor (whose working directory differs)."""
    return str(Path(settings.keyring).expanduser().resolve()) if settings.keyring else ""


def start_helpers(
    settings: Settings, database_url: str, shard_names: list[str], detached: bool = False
) -> list[Any]:
    """The helper services in their two host actors (``actors/host.py``); returns the hosts.

    Lookups: the handle directory and risk. Followers: the analytics follower, the
    reconciler (after the shards: it reads them), the notifier, the bank simulator when
    configured, and the ACH originator. Both hosts are created before either is called:
    each is a worker process that spends a second or more importing, and created
    together they import at once. The ``start`` calls then run in the order their reads
    need.
    """
    import ray

    from paynode.actors.ach import AchOriginator
    from paynode.actors.analytics import AnalyticsStreamer
    from paynode.actors.checkpointer import Checkpointer
    from paynode.actors.handles import HandleDirectory
    from paynode.actors.host import ServiceHost, ServiceSpec, find_service
    from paynode.actors.notifier import Notifier
    from paynode.actors.reconciler import Reconciler
    from paynode.actors.risk.actor import RiskActor

    if detached:
        _evict(list(HOSTS), settings.namespace)
    load_keyring(settings.data_path(), settings.keyring)  # exists before the notifier reads it
    data_dir, keyring = settings.data_path(), resolved_keyring(settings)
    lookups = [
        ServiceSpec(HANDLES_NAME, HandleDirectory, (database_url,)),
        ServiceSpec(RISK_NAME, RiskActor, (
            settings.risk.rules, settings.risk.limits, settings.sanctions.sdn,
            settings.sanctions.alt, settings.sanctions.threshold,
        )),
    ]  # fmt: skip
    followers = [
        ServiceSpec(ANALYTICS_NAME, AnalyticsStreamer, (
            database_url, str(settings.analytics_path()), settings.analytics.interval_ms,
            settings.analytics.max_rows, settings.analytics.max_segments,
            settings.analytics.compact,
        )),
        ServiceSpec(RECONCILER_NAME, Reconciler, (
            database_url, str(settings.analytics_path()), shard_names, settings.namespace,
            settings.recon.interval_ms, settings.recon.full_every,
        )),
        ServiceSpec(NOTIFIER_NAME, Notifier, (
            settings.notify, settings.webhook, settings.otp, data_dir, keyring, database_url,
            settings.push, settings.apns, settings.fcm, settings.email, settings.sms,
            settings.front_url(),
        )),
        *([_bank_simulator(settings)] if settings.bank_sim.enabled else []),
        *([_aggregator_simulator(settings)] if settings.link.sim_enabled else []),
        *([_rtp_simulator(settings)] if settings.rtp_sim.enabled else []),
        *([_card_simulator(settings)] if settings.card_sim.enabled else []),
        ServiceSpec(ACH_NAME, AchOriginator, (
            settings.ach, data_dir, keyring, settings.namespace, database_url,
            settings.bank_sim.enabled,
        )),
        ServiceSpec(CHECKPOINTER_NAME, Checkpointer, (
            database_url, settings.ledger.checkpoint_interval_s,
        )),
    ]  # fmt: skip
    # The helpers write files under the data directory: they run on this machine.
    options = _actor_options(settings, detached) | {
        "max_restarts": 0,
        "max_concurrency": 1000,
        "scheduling_strategy": _this_node(),
    }
    hosts: list[Any] = [
        ray.remote(ServiceHost).options(name=name, **options).remote(specs)
        for name, specs in ((LOOKUPS_HOST, lookups), (FOLLOWERS_HOST, followers))
    ]

    def service(name: str) -> Any:
        return find_service(name, settings.namespace)

    ray.get(service(ANALYTICS_NAME).start.remote())
    ray.get(service(RECONCILER_NAME).start.remote())  # reads the analytics follower
    ray.get(service(NOTIFIER_NAME).start.remote())
    # Warm: every live handle in memory before the API opens.
    ray.get(service(HANDLES_NAME).start.remote())
    ray.get(service(ACH_NAME).start.remote())
    ray.get(service(CHECKPOINTER_NAME).start.remote())
    ray.get(service(RISK_NAME).ping.remote())  # a bad rules, limits or list file stops here
    return hosts


def _this_node() -> object:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def _bank_simulator(settings: Settings) -> Any:
    """The simulated bank's service, and the secret it signs its webhooks with (added to
    ours by ``with_bank_secret``)."""
    from paynode.actors.bank_sim import PROVIDER, BankSimulator
    from paynode.actors.host import ServiceSpec

    providers = settings.providers()
    assert PROVIDER in providers, "start() gives the simulator its secret first"
    returns = json.loads(settings.bank_sim.returns) if settings.bank_sim.returns else None
    return ServiceSpec(BANK_SIM_NAME, BankSimulator, (
        settings.front_url(), providers[PROVIDER], settings.bank_sim.delay_s,
        settings.ach.odfi_routing, returns,
    ))  # fmt: skip


def _aggregator_simulator(settings: Settings) -> Any:
    """The simulated account aggregator (bank linking), signing with its own secret."""
    from paynode.actors.aggregator_sim import PROVIDER, AggregatorSimulator
    from paynode.actors.host import ServiceSpec

    secret = settings.providers()[PROVIDER]  # with_bank_secret made it
    return ServiceSpec(AGGREGATOR_SIM_NAME, AggregatorSimulator, (
        settings.front_url(), secret, settings.link.token_ttl_s,
    ))  # fmt: skip


def _rtp_simulator(settings: Settings) -> Any:
    """The simulated RTP network, signing its requests for payment with its own secret."""
    from paynode.actors.host import ServiceSpec
    from paynode.actors.names import RTP_SIM_NAME
    from paynode.actors.rtp_sim import PROVIDER, RtpNetworkSimulator
    from paynode.storage.bank_directory import load_rtp_participants

    rejects = json.loads(settings.rtp_sim.rejects) if settings.rtp_sim.rejects else None
    return ServiceSpec(RTP_SIM_NAME, RtpNetworkSimulator, (
        settings.front_url(), settings.providers()[PROVIDER], settings.rtp_sim.delay_ms,
        sorted(load_rtp_participants(settings.rtp.participants)), rejects,
    ))  # fmt: skip


def _card_simulator(settings: Settings) -> Any:
    """The simulated card processor, signing its events with its own secret."""
    from paynode.actors.card_sim import PROVIDER, CardProcessorSimulator
    from paynode.actors.host import ServiceSpec
    from paynode.actors.names import CARD_SIM_NAME

    return ServiceSpec(CARD_SIM_NAME, CardProcessorSimulator, (
        settings.front_url(), settings.providers()[PROVIDER], settings.card_sim.delay_ms,
        settings.card_sim.dispute_delay_ms, settings.card.fee_fixed, settings.card.fee_bps,
    ))  # fmt: skip


def with_bank_secret(settings: Settings) -> Settings:
    """The settings with a signing secret for the simulated bank's webhooks and the
    simulated aggregator's (one made up for this run when none is configured): the front
    verifies what the actors sign."""
    from paynode.actors.aggregator_sim import PROVIDER as AGGREGATOR
    from paynode.actors.bank_sim import PROVIDER
    from paynode.actors.card_sim import PROVIDER as CARD
    from paynode.actors.rtp_sim import PROVIDER as RTP

    providers = settings.providers()
    wanted = [p for p, on in ((PROVIDER, settings.bank_sim.enabled),
                              (AGGREGATOR, settings.link.sim_enabled),
                              (RTP, settings.rtp_sim.enabled),
                              (CARD, settings.card_sim.enabled)) if on]  # fmt: skip
    if all(p in providers for p in wanted):
        return settings
    for p in wanted:
        providers.setdefault(p, secrets.token_urlsafe(32))
    return replace(settings, webhook_providers=json.dumps(providers))


def start(settings: Settings, detached: bool = False) -> Services:
    """Everything but the HTTP front; ``detached`` for cluster mode (``paynode actors``).
    The front is built from the returned ``Services.settings``."""
    database_url, pg = start_postgres(settings)
    settings = with_bank_secret(settings)
    services = Services(settings, database_url, [], _pg=pg)
    try:
        services._owner = claim_database(database_url)
        applied = migrate(database_url)
        if applied:
            log.info("applied migrations %s", applied)
        services._ray_started = start_ray(settings)
        services.shard_names, services.shards = start_shards(settings, database_url, detached)
        services.helpers = start_helpers(settings, database_url, services.shard_names, detached)
    except BaseException:
        services.stop()
        raise
    return services
