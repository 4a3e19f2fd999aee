"""The names the node's actors are registered under in their Ray namespace.

Fronts, helpers and the CLI find actors by these names (cluster mode: on any
machine of the cluster), so they live below every layer that looks them up.
Shards are actors of their own; the helper services share two host actors
(``actors/host.py``), and ``HOST_OF`` says which service runs in which.
"""

from __future__ import annotations

SHARD_NAME = "paynode-shard-{index}"

# Helper services (found with actors.host.find_service).
ANALYTICS_NAME = "paynode-analytics"
RECONCILER_NAME = "paynode-reconciler"
NOTIFIER_NAME = "paynode-notifier"
HANDLES_NAME = "paynode-handles"
ACH_NAME = "paynode-ach"
BANK_SIM_NAME = "paynode-banksim"
RTP_SIM_NAME = "paynode-rtpsim"
CARD_SIM_NAME = "paynode-cardsim"
AGGREGATOR_SIM_NAME = "paynode-aggsim"
RISK_NAME = "paynode-risk"
CHECKPOINTER_NAME = "paynode-checkpointer"

# Their host actors: what the request path waits on runs at full priority; what follows
# the journal after the fact runs niced (actors/background.py), in a process of its own.
LOOKUPS_HOST = "paynode-lookups"
FOLLOWERS_HOST = "paynode-followers"
HOSTS = (LOOKUPS_HOST, FOLLOWERS_HOST)
HOST_OF = {
    HANDLES_NAME: LOOKUPS_HOST,
    RISK_NAME: LOOKUPS_HOST,
    ANALYTICS_NAME: FOLLOWERS_HOST,
    RECONCILER_NAME: FOLLOWERS_HOST,
    NOTIFIER_NAME: FOLLOWERS_HOST,
    ACH_NAME: FOLLOWERS_HOST,
    BANK_SIM_NAME: FOLLOWERS_HOST,
    RTP_SIM_NAME: FOLLOWERS_HOST,
    CARD_SIM_NAME: FOLLOWERS_HOST,
    AGGREGATOR_SIM_NAME: FOLLOWERS_HOST,
    CHECKPOINTER_NAME: FOLLOWERS_HOST,
}
