"""Background actors yield the CPU to the money path.

Analytics, reconciliation, notifications and the ACH rail follow the journal
after the fact; on a busy machine their work can wait a little, a transfer's
cannot. Their processes run at a lower priority than the shards, the fronts
and PostgreSQL (Ray starts every worker at the same niceness).
"""

from __future__ import annotations

import contextlib
import os

BACKGROUND_NICENESS = 10


def lower_priority() -> None:
    """Make this process nicer by BACKGROUND_NICENESS (once: Ray gives each actor its own)."""
    if os.environ.get("PAYNODE_BACKGROUND_NICED") == str(os.getpid()):
        return
    with contextlib.suppress(OSError):  # not permitted here: run at the same priority
        os.nice(BACKGROUND_NICENESS)
    os.environ["PAYNODE_BACKGROUND_NICED"] = str(os.getpid())
