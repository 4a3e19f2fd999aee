"""Cluster mode: the actors and the HTTP fronts as separate processes on a Ray cluster.

``paynode actors`` joins the cluster at ``RAY_ADDRESS``, migrates the
database, and starts the shard and helper actors *detached* and *named*, so
they outlive it and any number of API processes find them by name. It stays
up holding the database's ownership lock; SIGTERM or SIGINT stops the actors.
Killed with SIGKILL, it leaves them running; started again it adopts the
shards (with their memory) and replaces the helpers (they resume from
PostgreSQL and the data directory).

``paynode api --workers N`` runs N uvicorn worker processes. Each joins the
cluster as its own Ray driver and looks the actors up; uvicorn's supervisor
replaces a worker that dies. Shards decide and journal every transfer, so a
front holds nothing that a restart could lose.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

import msgspec

from paynode.domain.settings import Settings, from_env, replace
from paynode.node import fronts

log = logging.getLogger("paynode.cluster")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    actors = sub.add_parser(
        "actors", help="cluster mode: start the shard and helper actors on RAY_ADDRESS"
    )
    actors.add_argument("--data-dir", help="data directory (default ./paynode-data)")
    actors.add_argument(
        "--shards", type=int, help="shard actors (default: half the cores, at least 1)"
    )
    api = sub.add_parser("api", help="cluster mode: serve HTTP with actors found on RAY_ADDRESS")
    api.add_argument("--data-dir", help="data directory (default ./paynode-data)")
    api.add_argument("--host", help="listen address (default 127.0.0.1)")
    api.add_argument("--port", type=int, help="listen port (default 8000)")
    api.add_argument("--workers", type=int, default=1, help="API processes (default 1)")
    from paynode.node.fronts import serving_options

    serving_options(api)
    api.add_argument("--fd", type=int, help=(
        "serve on this inherited, already bound listening socket instead of binding "
        "--host/--port"
    ))  # fmt: skip


def _require_cluster(settings: Settings) -> str | None:
    if not settings.ray_address:
        return "cluster mode needs RAY_ADDRESS (host:port of the Ray head); `paynode run` " \
            "runs everything in one process instead"  # fmt: skip
    if not settings.database_url:
        return "cluster mode needs DATABASE_URL: every process must reach the same PostgreSQL"
    return None


def cmd_actors(settings: Settings) -> int:
    from paynode.node.runtime import start
    from paynode.storage.keyring import load

    problem = _require_cluster(settings)
    if problem:
        print(f"paynode: {problem}", file=sys.stderr)
        return 2
    load(settings.data_path(), settings.keyring)  # exists before the notifier reads it
    services = start(settings, detached=True)
    stop = threading.Event()
    # After start: ray.init installs a SIGTERM handler of its own that exits at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(
            f"paynode actors ready: {len(services.shard_names)} shards in namespace "
            f"{settings.namespace!r} on Ray at {settings.ray_address}",
            flush=True,
        )
        while not stop.wait(1.0):
            services.keep_ownership()
    finally:
        services.stop()
        print("paynode actors stopped", flush=True)
    return 0


def cmd_api(settings: Settings, workers: int, fd: int | None = None) -> int:

    problem = _require_cluster(settings)
    if problem:
        print(f"paynode: {problem}", file=sys.stderr)
        return 2
    if not 1 <= workers <= 64:
        print("paynode: --workers must be 1..64", file=sys.stderr)
        return 2
    print(
        f"paynode api on {fronts.scheme(settings)}://{settings.host}:{settings.port}"
        f" ({workers} workers, Ray at {settings.ray_address})",
        flush=True,
    )
    fronts.serve(settings, workers, None if fd is None else fronts.inherited_socket(fd))
    return 0


def app_from_env() -> Any:
    """The uvicorn factory run in each API worker: join Ray, find the actors, build the app."""
    from paynode.actors.bank_sim import PROVIDER
    from paynode.actors.host import find_service
    from paynode.actors.names import BANK_SIM_NAME
    from paynode.api.app import create_app
    from paynode.node.runtime import find_shards, start_ray
    from paynode.storage.keyring import load

    settings = from_env()
    from paynode.node.logs import configure

    configure(settings.log_format)
    start_ray(settings)
    import ray

    names = find_shards(settings.namespace)
    providers = settings.providers()
    if settings.bank_sim.enabled and PROVIDER not in providers:
        # The simulator signs with a secret `paynode actors` made; this front must verify it.
        sim: Any = find_service(BANK_SIM_NAME, settings.namespace)
        providers[PROVIDER] = ray.get(sim.signing_secret.remote(), timeout=60)
        settings = replace(settings, webhook_providers=msgspec.json.encode(providers).decode())
    from paynode.actors.aggregator_sim import PROVIDER as AGGREGATOR
    from paynode.actors.names import AGGREGATOR_SIM_NAME

    if settings.link.sim_enabled and AGGREGATOR not in providers:
        agg: Any = find_service(AGGREGATOR_SIM_NAME, settings.namespace)
        providers[AGGREGATOR] = ray.get(agg.signing_secret.remote(), timeout=60)
        settings = replace(settings, webhook_providers=msgspec.json.encode(providers).decode())
    from paynode.actors.names import RTP_SIM_NAME
    from paynode.actors.rtp_sim import PROVIDER as RTP

    if settings.rtp_sim.enabled and RTP not in providers:
        rtp: Any = find_service(RTP_SIM_NAME, settings.namespace)
        providers[RTP] = ray.get(rtp.signing_secret.remote(), timeout=60)
        settings = replace(settings, webhook_providers=msgspec.json.encode(providers).decode())
    from paynode.actors.card_sim import PROVIDER as CARD
    from paynode.actors.names import CARD_SIM_NAME

    if settings.card_sim.enabled and CARD not in providers:
        card: Any = find_service(CARD_SIM_NAME, settings.namespace)
        providers[CARD] = ray.get(card.signing_secret.remote(), timeout=60)
        settings = replace(settings, webhook_providers=msgspec.json.encode(providers).decode())
    keys = load(settings.data_path(), settings.keyring)
    log.info("API worker %d: %d shards found", os.getpid(), len(names))
    return create_app(settings, names, keys)
