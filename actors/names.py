"""The names the node's actors are registered under in their Ray namespace.

Fronts, helpers and the CLI find actors by these names (cluster mode: on any
machine of the cluster), so they live below every layer that looks them up.
"""

from __future__ import annotations

SHARD_NAME = "paynode-shard-{index}"
ANALYTICS_NAME = "paynode-analytics"
RECONCILER_NAME = "paynode-reconciler"
NOTIFIER_NAME = "paynode-notifier"
HANDLES_NAME = "paynode-handles"
ACH_NAME = "paynode-ach"
BANK_SIM_NAME = "paynode-banksim"
RISK_NAME = "paynode-risk"
HELPER_NAMES = (ANALYTICS_NAME, RECONCILER_NAME, NOTIFIER_NAME, HANDLES_NAME, BANK_SIM_NAME,
                ACH_NAME, RISK_NAME)  # fmt: skip


def shard_name(index: int) -> str:
    return SHARD_NAME.format(index=index)
