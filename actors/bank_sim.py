"""A simulated bank (the ODFI and every RDFI behind it), for development and tests.

It speaks the real formats: it takes our NACHA files, parses and checks them
(every count, hash and total), keeps a statement per receiving account (where
a user reads their micro-deposits), and after ``delay_s`` answers the way a
bank does: a NACHA **return file** for the entries its rules return, and a
settlement notice for the rest. Both reach the node as signed webhooks on
``POST /v1/webhooks/banksim``, retried until the node answers.

Which entries come back is decided by the receiving account number, like a
card network's test numbers (``DEFAULT_RETURNS``); a debit-only code (R01,
R10) never returns a credit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import msgspec

from paynode.actors.signed_post import SimulatedParty
from paynode.domain.rails.calendar import EASTERN
from paynode.domain.rails.nacha import (
    FileHeader,
    NachaError,
    ParsedFile,
    build_return_file,
    parse_file,
)

log = logging.getLogger("paynode.banksim")

PROVIDER = "banksim"
DEFAULT_RETURNS = {
    "000222222227": "R01",  # insufficient funds
    "000111111113": "R02",  # account closed
    "000333333335": "R03",  # no account / unable to locate
    "000444444440": "R10",  # customer advises not authorized
}
_DEBIT_ONLY = frozenset({"R01", "R09", "R10", "R29"})
_STATEMENT_LIMIT = 100  # lines kept per account


class StatementLine(msgspec.Struct):
    amount: int
    direction: str  # credit | debit, as the account holder sees it
    company_name: str
    effective_date: str
    trace_number: str


decode_statement = msgspec.msgpack.Decoder(list[StatementLine]).decode


class BankSimulator(SimulatedParty):
    """Run under Ray as ``ray.remote(BankSimulator)``."""

    def __init__(
        self,
        node_url: str,
        secret: str,
        delay_s: float,
        odfi_routing: str,
        returns: dict[str, str] | None = None,
    ) -> None:
        super().__init__(node_url, PROVIDER, secret)
        self._delay = delay_s
        self._odfi = odfi_routing
        self._returns = DEFAULT_RETURNS if returns is None else returns
        self._statements: dict[tuple[str, str], list[StatementLine]] = {}
        self._files: dict[str, ParsedFile] = {}
        self._sent = 0

    async def receive(self, file_id: str, text: str) -> int:
        """Accept one of our files (refused if malformed), answer it after the delay."""
        if file_id in self._files:
            return 0  # a retransmission: already being answered
        try:
            parsed = parse_file(text)
        except NachaError as e:
            log.error("banksim: file %s refused: %s", file_id, e)
            raise
        self._files[file_id] = parsed
        for batch in parsed.batches:
            for entry in batch.entries:
                key = (entry.routing, entry.account_number)
                lines = self._statements.setdefault(key, [])
                lines.append(StatementLine(
                    entry.amount, "credit" if entry.is_credit else "debit", batch.company_name,
                    str(batch.effective_date or ""), entry.trace_number,
                ))  # fmt: skip
                del lines[:-_STATEMENT_LIMIT]
        self._spawn(self._answer(file_id, parsed))
        return sum(len(b.entries) for b in parsed.batches)

    async def statement(self, routing: str, account_number: str) -> bytes:
        return msgspec.msgpack.encode(self._statements.get((routing, account_number), []))

    def _code_for(self, account_number: str, is_credit: bool) -> str | None:
        code = self._returns.get(account_number)
        if code is None or (is_credit and code in _DEBIT_ONLY):
            return None
        return code

    async def _answer(self, file_id: str, parsed: ParsedFile) -> None:
        await asyncio.sleep(self._delay)
        returned, settled = [], []
        first = parsed.batches[0] if parsed.batches else None
        for batch in parsed.batches:
            for e in batch.entries:
                code = self._code_for(e.account_number, e.is_credit)
                if code is None:
                    settled.append(e.trace_number)
                else:
                    returned.append((e.to_entry(), code))
        now = dt.datetime.now(EASTERN).replace(tzinfo=None)
        if returned and first is not None:
            head = FileHeader(
                immediate_destination=self._odfi, immediate_origin=self._odfi,
                destination_name="PAYNODE", origin_name="BANK SIMULATOR", created=now,
            )  # fmt: skip
            text = build_return_file(
                head, self._odfi, returned, now, sec_code=first.sec_code,
                company_name=first.company_name, company_id=first.company_id,
                entry_description=first.entry_description,
            )  # fmt: skip
            await self._post(f"{file_id}-returns", "ach.returns", {"file": text})
        if settled:
            data = {"file_id": file_id, "trace_numbers": settled,
                    "settlement_date": now.date().isoformat()}  # fmt: skip
            await self._post(f"{file_id}-settlement", "ach.settlement", data)

    async def _post(self, event_id: str, kind: str, data: dict) -> bool:
        sent = await super()._post(event_id, kind, data)
        self._sent += sent
        return sent
