"""What every request may use: the node's shared state in this API process.

One :class:`Context` per process, built when the app starts (``open_context``)
and closed when it stops; routes reach it through ``deps.Ctx`` and the hot
path (``api/transfers.py``) through the app's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from paynode.actors.heap import settle_heap
from paynode.actors.host import ServiceRef, find_service
from paynode.actors.names import (
    ACH_NAME,
    AGGREGATOR_SIM_NAME,
    ANALYTICS_NAME,
    BANK_SIM_NAME,
    CARD_SIM_NAME,
    CHECKPOINTER_NAME,
    HANDLES_NAME,
    NOTIFIER_NAME,
    RECONCILER_NAME,
    RISK_NAME,
    RTP_SIM_NAME,
)
from paynode.actors.risk.actor import RiskPolicy, decode_policy
from paynode.api import problems as p
from paynode.api.audit_writer import AuditWriter
from paynode.api.auth.authenticate import Authenticator
from paynode.api.auth.ratelimit import TokenBuckets
from paynode.api.batcher import Overloaded
from paynode.api.ledger_client import LedgerClient, Unavailable
from paynode.api.metrics import FrontMetrics, RiskStats
from paynode.api.scheduler import follow as scheduler_loop
from paynode.domain.ledger.model import AccountSpec, Code
from paynode.domain.rails import rtp_rules
from paynode.domain.rails.ach_rules import CLEARING_ACCOUNT, MICRODEPOSIT_ACCOUNT
from paynode.domain.rails.fedach import Participant
from paynode.domain.settings import Settings
from paynode.storage import bank_directory
from paynode.storage.database import async_engine
from paynode.storage.journal import EngineReads
from paynode.storage.keyring import Keyring

log = logging.getLogger("paynode.api")

STARTUP_WAIT_S = 120.0  # how long a starting front waits for its shards


@dataclass
class Context:
    settings: Settings
    keys: Keyring
    engine: AsyncEngine
    client: LedgerClient
    auth: Authenticator
    per_principal: TokenBuckets
    per_ip_auth: TokenBuckets  # register, login, refresh: password and token guessing
    analytics: ServiceRef  # the helper services (actors/host.py)
    reconciler: ServiceRef
    notifier: ServiceRef
    checkpointer: ServiceRef
    handles: ServiceRef
    ach: ServiceRef
    bank_sim: ServiceRef | None  # None when the simulator is off
    risk: ServiceRef
    policy: RiskPolicy  # the risk actor's rules, limits and list digest, taken at start
    risk_stats: RiskStats
    audit: AuditWriter  # group commit of the transfers' audit records
    metrics: FrontMetrics
    banks: Mapping[str, Participant]  # the FedACH directory (bank names by routing number)
    aggregator: ServiceRef | None = None  # bank linking (None: the simulator is off)
    rtp_network: ServiceRef | None = None  # the RTP network (None: not reachable)
    rtp_participants: frozenset[str] = frozenset()  # routing numbers RTP can credit
    card_processor: ServiceRef | None = None  # the card processor (None: cards are off)


@asynccontextmanager
async def open_context(
    settings: Settings, shard_names: list[str], keys: Keyring, metrics: FrontMetrics
) -> AsyncIterator[Context]:
    """Find the actors, open the pool and the audit writer; close them on the way out.

    Ray must be initialized in this process (the actors are looked up by name).
    """
    import ray

    def actor(name: str) -> Any:
        return ray.get_actor(name, namespace=settings.namespace)

    def service(name: str) -> ServiceRef:
        return find_service(name, settings.namespace)

    engine = async_engine(settings.database_url or "", settings.http.db_pool_size, "paynode-front")
    client = LedgerClient([actor(n) for n in shard_names], EngineReads(engine), settings,
                          on_batch=metrics.observe_batch)  # fmt: skip
    risk = service(RISK_NAME)
    ctx = Context(
        settings=settings,
        keys=keys,
        engine=engine,
        client=client,
        auth=Authenticator(keys, engine, settings.auth.auth_cache_s, settings.api_key),
        per_principal=TokenBuckets(settings.rate.per_s, settings.rate.burst),
        per_ip_auth=TokenBuckets(settings.auth_rate.per_s, settings.auth_rate.burst),
        analytics=service(ANALYTICS_NAME),
        reconciler=service(RECONCILER_NAME),
        notifier=service(NOTIFIER_NAME),
        checkpointer=service(CHECKPOINTER_NAME),
        handles=service(HANDLES_NAME),
        ach=service(ACH_NAME),
        bank_sim=service(BANK_SIM_NAME) if settings.bank_sim.enabled else None,
        risk=risk,
        policy=decode_policy(await risk.policy.remote()),
        risk_stats=RiskStats(),
        audit=AuditWriter(engine),
        metrics=metrics,
        banks=bank_directory.load(settings.ach.directory),
        aggregator=service(AGGREGATOR_SIM_NAME) if settings.link.sim_enabled else None,
        rtp_network=service(RTP_SIM_NAME) if settings.rtp_sim.enabled else None,
        rtp_participants=bank_directory.load_rtp_participants(settings.rtp.participants),
        card_processor=(
            service(CARD_SIM_NAME) if settings.card.enabled and settings.card_sim.enabled else None
        ),
    )
    ctx.audit.start()
    revocations = asyncio.create_task(ctx.auth.follow_revocations(settings.database_url or ""))
    keepalive = asyncio.create_task(client.keep_shards_started())
    scheduler = (
        asyncio.create_task(scheduler_loop(engine, client, settings.schedule.interval_ms,
                                           settings.schedule.batch))
        if settings.schedule.interval_ms > 0 else None
    )  # fmt: skip
    try:
        await _operator_accounts(client)
        settle_heap()  # what start-up built lives as long as the process
        yield ctx
    finally:
        revocations.cancel()
        keepalive.cancel()
        if scheduler is not None:
            scheduler.cancel()
        await ctx.audit.stop()
        await engine.dispose()


async def _operator_accounts(client: LedgerClient) -> None:
    """The accounts the rails move money through (created once; the same again is a no-op).

    A front may start while a shard restarts or rebuilds: it waits for it (bounded)
    rather than fail, since uvicorn's supervisor stops every worker when a
    replacement worker fails to start.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_WAIT_S
    for account_id in (CLEARING_ACCOUNT, MICRODEPOSIT_ACCOUNT, rtp_rules.CLEARING_ACCOUNT,
                       rtp_rules.FEES_ACCOUNT):  # fmt: skip
        while True:
            try:
                result = await client.create_account(AccountSpec(account_id, "USD", 0, "{}", 0, ""))
                code = result.code
            except (Unavailable, Overloaded) as e:
                code = getattr(e, "code", p.OVERLOADED)
            except p.ApiError as e:  # the request deadline passed
                code = e.code
            if code in (Code.OK, Code.EXISTS):
                break
            if code not in (Code.STORAGE_UNAVAILABLE, p.SHARD_RESTARTED, p.OVERLOADED, p.TIMEOUT):
                raise RuntimeError(f"operator account {account_id}: {code}")
            if loop.time() > deadline:
                raise RuntimeError(f"operator account {account_id}: shards unavailable ({code})")
            log.warning("front start: shards not ready (%s); waiting", code)
            await asyncio.sleep(0.5)  # a retry interval while a shard restarts
