"""Pure RTP rules: the ledger's moves, the fee, the network's limit, message ids.

How the ledger sees an instant payment (one operator clearing account,
``rtp-clearing-usd``, the node's position at the RTP network):

* a **send** (wallet -> a bank account, pacs.008) holds the wallet with two
  linked pending transfers: the amount to clearing and the fee to
  ``rtp-fees-usd``. The network's pacs.002 decides them: ``ACSC`` posts
  both (linked: both or neither), ``RJCT`` voids both and the wallet has
  every cent back.
* RTP settles with finality: an accepted payment is never returned. Its
  statuses are ``processing -> pending -> completed | failed``; money sent
  by mistake comes back only as a new payment from the payee.

The network is open 24x7x365: nothing here consults the banking calendar.
"""

from __future__ import annotations

import hashlib

CLEARING_ACCOUNT = "rtp-clearing-usd"
FEES_ACCOUNT = "rtp-fees-usd"
CURRENCY = "USD"
NETWORK_LIMIT = 1_000_000_00  # TCH RTP's per-payment limit since 2022: $1,000,000
RAIL = "rtp"


def hold_transfer_id(payment_id: str) -> str:
    """The pending transfer of the amount (the payment's ``transfer_id``)."""
    return f"rtp:{payment_id}"


def fee_transfer_id(payment_id: str) -> str:
    return f"rtp-fee:{payment_id}"


def post_transfer_ids(payment_id: str) -> tuple[str, str]:
    """The posts of the amount's and the fee's holds (accepted)."""
    return f"rtp-post:{payment_id}", f"rtp-fee-post:{payment_id}"


def void_transfer_ids(payment_id: str) -> tuple[str, str]:
    """The voids of the amount's and the fee's holds (rejected)."""
    return f"rtp-void:{payment_id}", f"rtp-fee-void:{payment_id}"


def end_to_end_id(payment_id: str) -> str:
    """The payment's ``EndToEndId`` (Max35Text): derived, so a resend is the same payment
    to the network (it answers a duplicate with its first answer)."""
    return "PN" + hashlib.sha256(payment_id.encode()).hexdigest()[:30].upper()


def message_id(payment_id: str) -> str:
    return "M" + hashlib.sha256(b"msg:" + payment_id.encode()).hexdigest()[:31].upper()


def fee(amount: int, fixed: int, bps: int) -> int:
    """The sender's fee: ``fixed`` minor units plus ``bps`` basis points of the amount,
    rounded up to a whole minor unit (integer arithmetic only)."""
    assert amount > 0 and fixed >= 0 and bps >= 0, (amount, fixed, bps)
    return fixed + (amount * bps + 9_999) // 10_000


def within_limit(amount: int, limit: int) -> bool:
    """Whether the network takes ``amount``: at most ``limit`` (a network's, or lower
    by the operator's choice; never above the network's)."""
    return 0 < amount <= min(limit, NETWORK_LIMIT)
