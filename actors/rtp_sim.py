"""A simulated RTP network (the network and every receiving bank behind it).

It speaks ISO 20022 (``domain/rails/iso20022.py``): it takes our pacs.008
credit transfers and answers each with a pacs.002 after ``delay_ms``, the way
a receiving bank answers within the network's seconds-long window; a message
sent twice (same ``EndToEndId``) gets its first answer. It keeps a statement
of the credits each receiving account got, and it originates the traffic a
real network would send us: requests for payment (pain.013) to our users,
delivered as signed webhooks on ``POST /v1/webhooks/rtpsim``, whose answers
(pain.014) we hand back with :meth:`respond`.

Like a card network's test numbers, the receiving account number decides the
answer: ``DEFAULT_REJECTS`` names the rejected ones and their reason, and
``SLOW_ACCOUNT`` is answered only after ``SLOW_S`` (longer than the node waits,
so the node must ask again with :meth:`status`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets

import msgspec

from paynode.actors.signed_post import SimulatedParty
from paynode.domain.rails import iso20022 as iso
from paynode.domain.rails.rtp_rules import NETWORK_LIMIT

log = logging.getLogger("paynode.rtpsim")

PROVIDER = "rtpsim"
DEFAULT_REJECTS = {
    "000333333335": "AC03",  # no such account at the receiving bank
    "000111111113": "AC04",  # account closed
    "000666666664": "AG01",  # the receiving account takes no instant credits
}
SLOW_ACCOUNT = "000555555550"
SLOW_S = 3.0
_KEPT = 10_000  # answers remembered (duplicates are answered from them)
_STATEMENT_LIMIT = 100


class Credit(msgspec.Struct):
    amount: int
    end_to_end_id: str
    debtor_agent: str
    at: str


decode_statement = msgspec.msgpack.Decoder(list[Credit]).decode


class RtpNetworkSimulator(SimulatedParty):
    """Run under Ray (a service of the followers host)."""

    def __init__(
        self,
        node_url: str,
        secret: str,
        delay_ms: int,
        participants: list[str],
        rejects: dict[str, str] | None = None,
    ) -> None:
        super().__init__(node_url, PROVIDER, secret)
        self._delay_s = delay_ms / 1000
        self._participants = frozenset(participants)
        self._rejects = DEFAULT_REJECTS if rejects is None else rejects
        self._answers: dict[str, str] = {}  # end-to-end id -> pacs.002
        self._in_flight: dict[str, asyncio.Future[str]] = {}
        self._statements: dict[tuple[str, str], list[Credit]] = {}
        self._request_answers: dict[str, str] = {}  # RfP end-to-end id -> pain.014

    # -- credit transfers -----------------------------------------------------------------

    async def submit(self, pacs008: str) -> str:
        """One pacs.008 in, its pacs.002 out (after the receiving bank's delay)."""
        try:
            m = iso.parse_credit_transfer(pacs008)
        except iso.MessageError as e:
            log.warning("rtpsim: message refused: %s", e)
            raise
        if m.end_to_end_id in self._answers:
            return self._answers[m.end_to_end_id]
        if m.end_to_end_id in self._in_flight:
            return await asyncio.shield(self._in_flight[m.end_to_end_id])
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._in_flight[m.end_to_end_id] = future
        try:
            wait_s = SLOW_S if m.creditor.account == SLOW_ACCOUNT else self._delay_s
            await asyncio.sleep(wait_s)
            answer = self._decide(m)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # observed: the caller's exception is the one raised
            raise
        finally:
            del self._in_flight[m.end_to_end_id]
        self._answers[m.end_to_end_id] = answer
        if len(self._answers) > _KEPT:
            del self._answers[next(iter(self._answers))]
        future.set_result(answer)
        return answer

    def _decide(self, m: iso.CreditTransfer) -> str:
        reason = None
        if m.creditor.agent not in self._participants:
            reason = "NOAT"
        elif m.currency != "USD":
            reason = "AM09"
        elif m.amount > NETWORK_LIMIT:
            reason = "AM02"
        else:
            reason = self._rejects.get(m.creditor.account)
        if reason is None:
            lines = self._statements.setdefault((m.creditor.agent, m.creditor.account), [])
            lines.append(Credit(m.amount, m.end_to_end_id, m.debtor.agent, _now().isoformat()))
            del lines[:-_STATEMENT_LIMIT]
        return iso.build_transfer_status(iso.TransferStatus(
            message_id=_message_id(), original_message_id=m.message_id,
            original_end_to_end_id=m.end_to_end_id,
            status=iso.REJECTED if reason else iso.ACCEPTED_SETTLED, reason=reason,
            created_at=_now(),
        ))  # fmt: skip

    async def status(self, end_to_end_id: str) -> str:
        """The answer to a message (pacs.002), ``PDNG`` while the receiver decides, or ""
        when the network never got it (the sender sends it again)."""
        if end_to_end_id in self._answers:
            return self._answers[end_to_end_id]
        if end_to_end_id in self._in_flight:
            return iso.build_transfer_status(iso.TransferStatus(
                message_id=_message_id(), original_message_id="NOTPROVIDED",
                original_end_to_end_id=end_to_end_id, status="PDNG", created_at=_now(),
            ))  # fmt: skip
        return ""

    async def statement(self, routing: str, account_number: str) -> bytes:
        """The instant credits an outside account received (what its bank shows)."""
        return msgspec.msgpack.encode(self._statements.get((routing, account_number), []))

    # -- requests for payment -------------------------------------------------------------

    async def request_payment(
        self, creditor: iso.Party, debtor: iso.Party, amount: int, remittance: str,
        expires_s: int,
    ) -> str:  # fmt: skip
        """An outside creditor asks one of the node's users to pay (pain.013, delivered as
        a webhook); its end-to-end id."""
        now = _now()
        e2e = "RFP" + secrets.token_hex(16).upper()
        text = iso.build_payment_request(iso.PaymentRequest(
            message_id=_message_id(), end_to_end_id=e2e, amount=amount, currency="USD",
            creditor=creditor, debtor=debtor, remittance=remittance,
            expires_at=now + dt.timedelta(seconds=expires_s), created_at=now,
        ))  # fmt: skip
        self._spawn(self._post(e2e, "rtp.request_for_payment", {"message": text}))
        return e2e

    async def respond(self, pain014: str) -> bool:
        """The payer's bank answers a request for payment."""
        m = iso.parse_request_status(pain014)
        self._request_answers[m.original_end_to_end_id] = pain014
        return True

    async def request_answer(self, end_to_end_id: str) -> str:
        """The pain.014 the payer's bank answered a request with ("" before it did)."""
        return self._request_answers.get(end_to_end_id, "")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _message_id() -> str:
    return "RTPSIM" + secrets.token_hex(12).upper()
