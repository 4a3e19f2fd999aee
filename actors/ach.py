"""The ACH originator actor: at each cutoff, pending entries become one NACHA file.

One transaction takes the pending entries (``FOR UPDATE SKIP LOCKED``),
stores the sealed file, marks the entries and their payments ``submitted``
and writes the ``payment.submitted`` events; only then is the file handed to
the bank (the simulator here). A file stored but not handed over is sent at
the next cutoff. Holds were placed when each payment was made, so nothing
here touches the ledger.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from paynode.actors.background import lower_priority
from paynode.actors.host import find_service
from paynode.actors.names import BANK_SIM_NAME
from paynode.domain.rails.ach_rules import Originator, Outgoing, build
from paynode.domain.settings import AchSettings
from paynode.storage import ach, payments
from paynode.storage.database import async_engine
from paynode.storage.keyring import load as load_keyring

log = logging.getLogger("paynode.ach")

MAX_ENTRIES_PER_FILE = 10_000
_MODIFIERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class CutoffResult(msgspec.Struct):
    file_id: str | None
    entries: int
    total_debit: int
    total_credit: int
    transmitted: bool


decode_cutoff = msgspec.msgpack.Decoder(CutoffResult).decode


class AchOriginator:
    """Run under Ray as ``ray.remote(AchOriginator)`` or in a ``ServiceHost``.

    ``bank`` says whether to hand files to the bank simulator, found by name in
    ``namespace`` at start; ``data_dir`` is absolute (an actor's working
    directory is not the node's).
    """

    def __init__(
        self,
        ach_s: AchSettings,
        data_dir: Path,
        keyring: str,
        namespace: str,
        database_url: str,
        bank: bool,
    ) -> None:
        lower_priority()  # follows the journal: yields the CPU to the money path
        assert data_dir.is_absolute(), data_dir
        self._ach = ach_s
        self._namespace = namespace
        self._engine = async_engine(database_url, pool_size=2, name="paynode-ach")
        self._keys = load_keyring(data_dir, keyring, create=False)
        self._origin = Originator(
            odfi_routing=ach_s.odfi_routing,
            company_name=ach_s.company_name,
            company_id=ach_s.company_id,
        )
        self._use_bank = bank  # send files to the simulated bank
        self._bank: Any = None  # the bank simulator's service, found at start
        self._lock = asyncio.Lock()  # one cutoff at a time
        self._files_today: tuple[dt.date, int] = (dt.date.min, 0)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._use_bank:
            self._bank = find_service(BANK_SIM_NAME, self._namespace)
        if self._ach.cutoff_interval_ms > 0:
            self._task = asyncio.create_task(self._loop())

    async def ping(self) -> bool:
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._engine.dispose()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._ach.cutoff_interval_ms / 1000)
            try:
                await self.cutoff()
            except (SQLAlchemyError, OSError) as e:
                log.warning("ach: cutoff failed: %s", type(e).__name__)

    async def cutoff(self) -> bytes:
        """Build, store and send one file of everything pending (if anything is)."""
        async with self._lock:
            result = await self._build()
            await self._transmit_untransmitted()
            if result.file_id is not None:
                async with self._engine.connect() as conn:
                    sent = await ach.get_file(conn, self._keys, result.file_id)
                result.transmitted = sent is not None and sent[0].transmitted_at is not None
            return msgspec.msgpack.encode(result)

    def _modifier(self, today: dt.date) -> str:
        day, n = self._files_today
        n = n + 1 if day == today else 0
        self._files_today = (today, n)
        return _MODIFIERS[n % len(_MODIFIERS)]

    async def _build(self) -> CutoffResult:
        now = dt.datetime.now(dt.UTC)
        async with self._engine.begin() as conn:
            pending = await ach.pending_entries(conn, MAX_ENTRIES_PER_FILE)
            if not pending:
                return CutoffResult(None, 0, 0, 0, False)
            details: dict[str, ach.BankDetails] = {}
            outgoing = []
            for e in pending:
                if e.bank_account_id not in details:
                    details[e.bank_account_id] = await ach.details(
                        conn, self._keys, e.bank_account_id
                    )
                d = details[e.bank_account_id]
                outgoing.append(
                    Outgoing(
                        entry_id=e.id, kind=e.kind, amount=e.amount, same_day=e.same_day,
                        routing=d.routing_number, account_number=d.account_number,
                        account_type=d.account_type, holder_type=d.holder_type,
                        holder_name=d.holder_name, individual_id=e.payment_id or e.bank_account_id,
                    )
                )  # fmt: skip
            built = build(outgoing, self._origin, now, self._modifier(now.date()))
            file_id = f"achf_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
            await ach.store_file(
                conn, self._keys, file_id, "outbound", built.text, len(pending),
                built.total_debit, built.total_credit,
            )  # fmt: skip
            await ach.mark_submitted(conn, file_id, built.traces)
            for e in pending:
                if e.payment_id is not None:
                    await payments.transition(conn, e.payment_id, "submitted", extra={
                        "ach": {"file_id": file_id, "trace_number": built.traces[e.id][0],
                                "effective_date": built.traces[e.id][1].isoformat()}})  # fmt: skip
        log.info("ach: file %s with %d entries", file_id, len(pending))
        return CutoffResult(file_id, len(pending), built.total_debit, built.total_credit, False)

    async def _transmit_untransmitted(self) -> None:
        if self._bank is None:
            return
        async with self._engine.connect() as conn:
            waiting = [f for f in await ach.list_files(conn, 100)
                       if f.transmitted_at is None and f.direction == "outbound"]  # fmt: skip
        for f in reversed(waiting):  # oldest first
            async with self._engine.connect() as conn:
                found = await ach.get_file(conn, self._keys, f.id)
            assert found is not None
            try:
                await self._bank.receive.remote(f.id, found[1])
            except Exception as e:  # the bank is unreachable: the next cutoff tries again
                log.warning("ach: file %s not transmitted: %s", f.id, type(e).__name__)
                return
            async with self._engine.begin() as conn:
                await ach.mark_transmitted(conn, f.id)
