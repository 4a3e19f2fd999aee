"""Pure dispute (chargeback) rules: statuses, the ledger's moves, ids.

A cardholder disputes a captured charge at their bank; the processor tells us
(``charge.dispute.created``) and, as processors do, takes the disputed amount back
until the dispute is decided. On the ledger the amount leaves the credited wallet at
once as a **hold**: a pending transfer wallet -> ``card-disputes-usd``. The merchant
answers with evidence (or accepts the dispute); the issuer decides:

* **won**: the hold is voided, the wallet has the money again;
* **lost**: the hold is posted, the money is gone to the cardholder.

A wallet that cannot cover the hold (already spent) is recorded as such: a lost
dispute then takes what it can as a posted transfer and the rest stays owed
(``unrecovered``), for an operator. Statuses: ``needs_response -> under_review ->
won | lost``; ``needs_response -> lost`` when the merchant accepts.
"""

from __future__ import annotations

DISPUTES_ACCOUNT = "card-disputes-usd"
STATUSES = ("needs_response", "under_review", "won", "lost")
OPEN = frozenset({"needs_response", "under_review"})
MAX_EVIDENCE_CHARS = 20_000
# Which status may follow which (anything else is a replayed or overtaken step).
TRANSITIONS: dict[str, frozenset[str]] = {
    "under_review": frozenset({"needs_response"}),
    "won": frozenset({"needs_response", "under_review"}),
    "lost": frozenset({"needs_response", "under_review"}),
}


def hold_transfer_id(dispute_id: str) -> str:
    return f"dispute:{dispute_id}"


def release_transfer_id(dispute_id: str) -> str:
    """The void of the hold (won)."""
    return f"dispute-won:{dispute_id}"


def settle_transfer_id(dispute_id: str) -> str:
    """The post of the hold, or the claw-back when nothing was held (lost)."""
    return f"dispute-lost:{dispute_id}"


def allowed(current: str, new: str) -> bool:
    return current in TRANSITIONS.get(new, frozenset())


def winning(evidence: str) -> bool:
    """The simulator's issuer: evidence naming ``winning_evidence`` wins (Stripe's test
    convention), anything else loses."""
    return "winning_evidence" in evidence
