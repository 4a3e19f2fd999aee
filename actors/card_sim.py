"""A simulated card processor (``cardsim``): tokens, charges, refunds, settlement, disputes.

It stands in for a processor like Stripe. Clients tokenize cards with it (the node
never sees a card number); the node attaches a token (:meth:`attach`: the card's
brand, last 4, expiry and a payment-method reference), then authorizes, captures,
voids and refunds charges by reference. Every call is idempotent by the id the node
derives (a charge's ``charge_ref``, a refund's id), as a real processor's
idempotency keys are. Its asynchronous events, signed like the other simulators'
(``actors/signed_post.py``), go to ``POST /v1/webhooks/cardsim``: a settlement batch
when :meth:`settle` is called, and a dispute some time after a ``tok_createDispute``
card's capture, decided (``charge.dispute.closed``) after the merchant's evidence
(:meth:`submit_evidence`) or acceptance (:meth:`accept_dispute`).

The test tokens (``domain/rails/card_rules.TEST_TOKENS``) decide the behaviour; the
reference carries it (``pm_<behaviour>_<random>``), so a restarted simulator still
answers for cards attached before.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import msgspec

from paynode.actors.signed_post import SimulatedParty
from paynode.domain.rails import card_rules as rules
from paynode.domain.rails import disputes

log = logging.getLogger("paynode.cardsim")

PROVIDER = "cardsim"
_KEPT = 100_000  # charges and refunds remembered (replays are answered from them)
_BATCH_LINES = 1_000  # settlement lines per batch (the rest go in the next)
_EXP = (12, 2034)  # every test card's expiry (the expired card is refused by its issuer)

encode = msgspec.msgpack.encode
decode_card = msgspec.msgpack.Decoder(rules.Card).decode
decode_authorization = msgspec.msgpack.Decoder(rules.Authorization).decode


class _Charge(msgspec.Struct):
    payment_id: str
    behaviour: str
    amount: int
    answer: rules.Authorization
    captured: bool = False
    refunded: int = 0
    settled: bool = False


class CardProcessorSimulator(SimulatedParty):
    """Run under Ray (a service of the followers host)."""

    def __init__(
        self, node_url: str, secret: str, delay_ms: int, dispute_delay_ms: int, fee_fixed: int,
        fee_bps: int,
    ) -> None:  # fmt: skip
        super().__init__(node_url, PROVIDER, secret)
        self._delay_s = delay_ms / 1000
        self._dispute_delay_s = dispute_delay_ms / 1000
        self._fee = (fee_fixed, fee_bps)
        self._charges: dict[str, _Charge] = {}
        self._refunds: dict[str, rules.SettlementLine] = {}
        self._unsettled_refunds: list[str] = []
        self._disputes: dict[str, tuple[str, str]] = {}  # id -> (payment id, status)

    # -- payment methods ------------------------------------------------------------------

    async def attach(self, token: str) -> bytes:
        """A test token to a stored card (msgpack ``Card``), or b"" for an unknown token."""
        known = rules.TEST_TOKENS.get(token)
        if known is None:
            return b""
        brand, last4, behaviour = known
        ref = f"pm_{behaviour}_{secrets.token_hex(8)}"
        return encode(rules.Card(brand, last4, _EXP[0], _EXP[1], ref))

    # -- charges --------------------------------------------------------------------------

    async def authorize(
        self, charge_ref: str, payment_id: str, processor_ref: str, amount: int, currency: str
    ) -> bytes:
        """Authorize a charge (msgpack ``Authorization``); the same ``charge_ref`` again
        gets its first answer."""
        if charge_ref in self._charges:
            return encode(self._charges[charge_ref].answer)
        await asyncio.sleep(self._delay_s)
        behaviour = _behaviour(processor_ref)
        if behaviour is None or currency != rules.CURRENCY or amount > rules.PROCESSOR_LIMIT:
            answer = rules.Authorization("declined", rules.CARD_DECLINED)
        elif behaviour == "3ds":
            answer = rules.Authorization("requires_action")
        elif behaviour in rules.DECLINE_CODES:
            answer = rules.Authorization("declined", behaviour)
        else:
            answer = _approved()
        self._remember(charge_ref, _Charge(payment_id, behaviour or "", amount, answer))
        return encode(answer)

    async def confirm(self, charge_ref: str, authenticated: bool) -> bytes:
        """The cardholder finished (or failed) 3-D Secure at the issuer: the charge's final
        answer. Any other charge answers as it did."""
        c = self._charges.get(charge_ref)
        if c is None:
            return encode(rules.Authorization("declined", rules.CARD_DECLINED))
        if c.answer.status == "requires_action":
            failed = rules.Authorization("declined", rules.AUTHENTICATION_FAILED)
            c.answer = _approved() if authenticated else failed
        return encode(c.answer)

    async def capture(self, charge_ref: str) -> bool:
        c = self._charges.get(charge_ref)
        if c is None or c.answer.status != "approved":
            return False
        if not c.captured:
            c.captured = True
            if c.behaviour == "dispute":
                self._spawn(self._dispute(charge_ref, c))
        return True

    async def void(self, charge_ref: str) -> bool:
        c = self._charges.get(charge_ref)
        if c is None or c.captured:
            return c is None  # nothing to void; a captured charge is refunded instead
        c.answer = rules.Authorization("declined", "voided")
        return True

    async def refund(self, refund_id: str, charge_ref: str, amount: int) -> bool:
        """Refund part of a captured charge; the same ``refund_id`` again is a replay.
        Never more than captured."""
        if refund_id in self._refunds:
            return True
        c = self._charges.get(charge_ref)
        if c is None or not c.captured or c.refunded + amount > c.amount or amount <= 0:
            return False
        c.refunded += amount
        self._refunds[refund_id] = rules.SettlementLine("refund", refund_id, c.payment_id, amount)
        self._unsettled_refunds.append(refund_id)
        return True

    # -- asynchronous events --------------------------------------------------------------

    async def settle(self) -> str:
        """Pay out what was captured and refunded since the last batch (at most
        ``_BATCH_LINES`` lines): a ``card.settlement`` webhook; the batch's id ("" if
        there is nothing to settle)."""
        lines: list[rules.SettlementLine] = []
        for ref, c in self._charges.items():
            if len(lines) >= _BATCH_LINES:
                break
            if c.captured and not c.settled:
                c.settled = True
                lines.append(rules.SettlementLine("charge", ref, c.payment_id, c.amount,
                                                  rules.fee(c.amount, *self._fee)))  # fmt: skip
        while self._unsettled_refunds and len(lines) < _BATCH_LINES:
            lines.append(self._refunds[self._unsettled_refunds.pop(0)])
        if not lines:
            return ""
        batch = rules.Settlement("st_" + secrets.token_hex(12), lines)
        data = msgspec.to_builtins(batch)
        self._spawn(self._post(batch.id, "card.settlement", data))
        return batch.id

    async def _dispute(self, charge_ref: str, c: _Charge) -> None:
        await asyncio.sleep(self._dispute_delay_s)
        dispute_id = "dp_" + secrets.token_hex(12)
        self._disputes[dispute_id] = (c.payment_id, "needs_response")
        data = {
            "dispute": dispute_id, "charge": charge_ref, "payment_id": c.payment_id,
            "amount": c.amount, "reason": "fraudulent", "created": int(time.time()),
        }  # fmt: skip
        await self._post(f"{dispute_id}.created", "charge.dispute.created", data)

    async def submit_evidence(self, dispute_id: str, evidence: str) -> bool:
        """The merchant's evidence reaches the issuer, which decides after the dispute
        delay (``charge.dispute.closed``). Evidence for a decided dispute changes nothing."""
        found = self._disputes.get(dispute_id)
        if found is None:
            return False
        if found[1] == "needs_response":
            self._disputes[dispute_id] = (found[0], "under_review")
            status = "won" if disputes.winning(evidence) else "lost"
            self._spawn(self._close(dispute_id, found[0], status, self._dispute_delay_s))
        return True

    async def accept_dispute(self, dispute_id: str) -> bool:
        """The merchant gives up: the dispute is lost at once."""
        found = self._disputes.get(dispute_id)
        if found is None:
            return False
        if found[1] == "needs_response":
            self._disputes[dispute_id] = (found[0], "under_review")
            self._spawn(self._close(dispute_id, found[0], "lost", 0.0))
        return True

    async def _close(self, dispute_id: str, payment_id: str, status: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._disputes[dispute_id] = (payment_id, status)
        data = {"dispute": dispute_id, "payment_id": payment_id, "status": status}
        await self._post(f"{dispute_id}.closed", "charge.dispute.closed", data)

    def _remember(self, charge_ref: str, c: _Charge) -> None:
        self._charges[charge_ref] = c
        if len(self._charges) > _KEPT:
            del self._charges[next(iter(self._charges))]
        if len(self._refunds) > _KEPT:
            del self._refunds[next(iter(self._refunds))]
        if len(self._disputes) > _KEPT:
            del self._disputes[next(iter(self._disputes))]


def _behaviour(processor_ref: str) -> str | None:
    if not processor_ref.startswith("pm_"):
        return None
    behaviour = processor_ref[3:].rpartition("_")[0]
    return behaviour if behaviour in rules.BEHAVIOURS else None


def _approved() -> rules.Authorization:
    return rules.Authorization("approved", authorization_code=secrets.token_hex(3).upper())
