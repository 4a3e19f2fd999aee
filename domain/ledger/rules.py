"""The ledger rules: pure, synchronous, no I/O, no Ray.

A :class:`Ledger` holds the accounts of one shard (its *local* accounts) with
their balances, its open pending transfers, and a bounded window of the
transfers it decided recently (``domain/ledger/window.py``). An id outside the
window is looked up in the journal before the batch naming it is decided:
``unknown`` says which, and the answer comes back as ``Recalled``.
Accounts on other shards are *remote*: the caller has already checked that
they exist and have the right currency, and their legs are applied by their
own shard from the same :class:`JournalRow`.

Two operations do everything:

* ``decide`` turns a request into a journal row or a refusal code, reading
  local state only;
* ``apply`` adds a row's effect to the local accounts (idempotent by id).

Balances are therefore a pure function of the rows applied, which is also how a
shard recovers: it replays its rows from the journal.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from msgspec.structs import astuple

from paynode.domain.ledger.model import (
    MAX_AMOUNT,
    NO_METADATA,
    NOTHING_RECALLED,
    RESOLVES_PENDING,
    ROW_DEBIT,
    AccountBalances,
    AccountFlags,
    AccountSpec,
    Code,
    JournalRow,
    Outcome,
    Recalled,
    Row,
    Status,
    TransferFlags,
    TransferOp,
    same_request,
)
from paynode.domain.ledger.ports import ShardSnapshot
from paynode.domain.ledger.window import Window
from paynode.domain.ledger.wire import (
    APPLIED,
    REPLAYED,
    RESULT_OF,
    BatchResult,
    TransferBatch,
    batch_groups,
    batch_ops,
)

DMNEC = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
CMNED = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
EXPIRY_PREFIX = "~expired:"  # '~' is outside the client id alphabet


class Account:
    """A local account's balances. ``held_*`` are two-phase reservations.

    ``flags`` and ``currency`` repeat the spec's: one attribute read instead of
    two on the hot path.
    """

    __slots__ = ("cp", "cpend", "currency", "dp", "dpend", "flags", "held_cr", "held_dr", "spec")

    def __init__(self, spec: AccountSpec) -> None:
        self.spec = spec
        self.flags = spec.flags
        self.currency = spec.currency
        self.dp = 0  # debits_posted
        self.cp = 0  # credits_posted
        self.dpend = 0  # debits_pending
        self.cpend = 0  # credits_pending
        self.held_dr = 0  # debit exposure reserved by prepared cross-shard groups
        self.held_cr = 0  # credit exposure reserved by prepared cross-shard groups

    def balances(self) -> AccountBalances:
        s = self.spec
        return AccountBalances(
            s.id, s.currency, s.flags, s.metadata, s.ts,
            self.dp, self.cp, self.dpend, self.cpend, s.owner,
        )  # fmt: skip


class Pending:
    """A pending transfer owned by this shard (its debit account is local)."""

    __slots__ = ("amount", "credit", "currency", "debit", "expires_at", "state")

    def __init__(self, row: JournalRow) -> None:
        self.amount = row.amount
        self.debit = row.debit_account_id
        self.credit = row.credit_account_id
        self.currency = row.currency
        self.expires_at = row.ts + row.timeout_s * 1_000_000_000 if row.timeout_s else 0
        self.state = Status.PENDING


@dataclass
class Hold:
    """What a prepared cross-shard group reserved here, released by commit or abort."""

    accounts: list[tuple[str, int, int]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    pendings: list[str] = field(default_factory=list)


class Ledger:
    """One shard's accounts and the rules that move money between them."""

    def __init__(self, window: int = 0, max_accounts: int = 0) -> None:
        """``window``: how many recent transfer ids to remember (0: all, for tests);
        ``max_accounts``: the accounts this ledger may hold (0: no limit)."""
        self.accounts: dict[str, Account] = {}
        self.max_accounts = max_accounts
        # Recent transfers whose debit account is local, as plain tuples in JournalRow's
        # field order (the order of the journal's COPY): compact, and written as they are.
        self.rows: Window[Row] = Window(window)
        self.credited: Window[bool] = Window(window)  # applied here on the credit side only
        self.pendings: dict[str, Pending] = {}  # open ones
        self.resolved: Window[Pending] = Window(window)  # recently posted, voided, expired
        self.agings = 0  # how many times the window aged (it may forget what it knew)
        # The journal's answers for the ids of the batch being decided (``unknown``).
        self.recalled: Recalled = NOTHING_RECALLED
        # Open pendings whose credit account is local but debit account is not:
        # id -> amount, so that a two-phase chain can size a post's credit leg.
        self.credit_pendings: dict[str, int] = {}
        self.holds: dict[str, Hold] = {}
        self.inflight_ids: set[str] = set()
        self.locked_pendings: set[str] = set()
        self._expiry: list[tuple[int, str]] = []
        self._clock = 0

    # -- time -------------------------------------------------------------

    def timestamp(self, now_ns: int) -> int:
        """Strictly increasing per shard, even if the wall clock steps back."""
        self._clock = max(self._clock + 1, now_ns)
        return self._clock

    # -- the recent-id window ----------------------------------------------

    def unknown(self, ops: Sequence[TransferOp]) -> tuple[list[str], list[str]]:
        """The transfer ids and pending ids among ``ops`` that memory cannot answer for.

        Their rows must be looked up in the journal (``Recalled``) before ``ops`` are
        decided: an id outside the window may have been journaled long ago.
        """
        rows, pendings, resolved = self.rows, self.pendings, self.resolved
        ids = [op.id for op in ops if op.id not in rows]
        pids = [
            op.pending_id for op in ops
            if op.pending_id is not None and op.pending_id not in pendings
            and op.pending_id not in resolved and op.pending_id not in rows
        ]  # fmt: skip
        return ids, pids

    def unknown_in_batch(self, b: TransferBatch) -> tuple[list[str], list[str]]:
        """``unknown`` for a batch: only its ids (a batch's pending ids are all in
        flagged groups, which the general path decides, so they come as ops)."""
        young, old = self.rows.young, self.rows.old
        ids = [i for i in b.ids if i not in young and i not in old]
        pids: list[str] = []
        if any(b.flags):
            _, pids = self.unknown(
                [op for k, f in enumerate(b.flags) if f for op in batch_ops(b, k, k + 1)]
            )
        return ids, pids

    def window_full(self) -> bool:
        return self.rows.full() or self.credited.full() or self.resolved.full()

    def age(self) -> int:
        """Forget the older half of the window (everything in it must be journaled)."""
        self.agings += 1
        self.credited.age()
        self.resolved.age()
        return self.rows.age()

    def _recalled_pending(self, pid: str) -> Pending | None:
        """A resolved pending of this shard known only to the journal, or None."""
        r = self.recalled.rows.get(pid)
        state = self.recalled.resolutions.get(pid)
        if r is None or state is None or r[ROW_DEBIT] not in self.accounts:
            return None
        p = Pending(JournalRow(*r))
        p.state = state
        return p

    def restore(
        self, balances: dict[str, tuple[int, int, int, int]], pendings: Iterable[JournalRow],
        clock: int,
    ) -> None:  # fmt: skip
        """Start from a checkpoint: the accounts' balance sums, the pendings still open, and
        the latest stamp folded in. The accounts must exist; rows after it are ``apply``'d."""
        assert not self.rows and not self.pendings, "restore a fresh ledger only"
        for account_id, (dp, cp, dpend, cpend) in balances.items():
            a = self.accounts[account_id]
            assert min(dp, cp, dpend, cpend) >= 0, account_id
            a.dp, a.cp, a.dpend, a.cpend = dp, cp, dpend, cpend
        for row in pendings:
            assert row.status == Status.PENDING
            if row.debit_account_id in self.accounts:
                p = self.pendings[row.id] = Pending(row)
                if p.expires_at:
                    heapq.heappush(self._expiry, (p.expires_at, row.id))
            elif row.credit_account_id in self.accounts:
                self.credit_pendings[row.id] = row.amount
        self._clock = max(self._clock, clock)

    # -- accounts ---------------------------------------------------------

    def create_account(self, spec: AccountSpec) -> tuple[str, AccountSpec]:
        """Create or replay an account. Returns (code, the stored spec)."""
        existing = self.accounts.get(spec.id)
        if existing is not None:
            old = existing.spec
            same = (old.currency, old.flags, old.metadata, old.owner) == (
                spec.currency,
                spec.flags,
                spec.metadata,
                spec.owner,
            )
            return (Code.EXISTS if same else Code.EXISTS_WITH_DIFFERENT_FIELDS), old
        if self.max_accounts and len(self.accounts) >= self.max_accounts:
            # Accounts live in memory (their balances decide every transfer): a budget,
            # not a cache. Refused whole, so the client knows nothing was created.
            return Code.ACCOUNT_LIMIT_REACHED, spec
        self.accounts[spec.id] = Account(spec)
        return Code.OK, spec

    def drop_account(self, account_id: str) -> None:
        """Undo a creation whose commit failed (only ever a fresh, untouched account)."""
        acct = self.accounts.pop(account_id)
        assert acct.dp == acct.cp == acct.dpend == acct.cpend == 0

    # -- deciding ---------------------------------------------------------

    def decide(self, op: TransferOp, now_ns: int) -> Outcome:
        """Check ``op`` against local state; return a new row, a replay or a refusal.

        The debit account must be local (the debit shard decides). A local
        credit account is checked here too; a remote one was checked by the
        caller, except for its credit limit, which its own shard reserves in
        a two-phase group (see ``prepare``).
        """
        stored = self.rows.get(op.id) or self.recalled.rows.get(op.id)
        if stored is not None:
            old = JournalRow(*stored)
            if same_request(op, old):
                return Outcome(op.id, Code.OK, old, replayed=True)
            return Outcome(op.id, Code.EXISTS_WITH_DIFFERENT_FIELDS)
        if op.id in self.inflight_ids:
            return Outcome(op.id, Code.TRANSFER_IN_FLIGHT)
        dr = self.accounts.get(op.debit_account_id)
        assert dr is not None, "routed to a shard that does not own the debit account"
        cr = self.accounts.get(op.credit_account_id)
        if dr.currency != op.currency or (cr is not None and cr.currency != op.currency):
            return Outcome(op.id, Code.CURRENCY_MISMATCH)

        if op.flags & RESOLVES_PENDING:
            return self._decide_resolution(op, now_ns)

        amount = op.amount
        assert amount is not None and 0 < amount <= MAX_AMOUNT
        if dr.dp + dr.dpend + amount > MAX_AMOUNT:
            return Outcome(op.id, Code.OVERFLOW)
        if dr.flags & DMNEC and dr.dp + dr.dpend + dr.held_dr + amount > dr.cp:
            return Outcome(op.id, Code.INSUFFICIENT_FUNDS)
        if cr is not None:
            if cr.cp + cr.cpend + amount > MAX_AMOUNT:
                return Outcome(op.id, Code.OVERFLOW)
            if cr.flags & CMNED and cr.cp + cr.cpend + cr.held_cr + amount > cr.dp:
                return Outcome(op.id, Code.CREDITS_EXCEED_DEBITS)
        pending = bool(op.flags & TransferFlags.PENDING)
        return Outcome(
            op.id,
            Code.OK,
            self._row(
                op,
                amount,
                Status.PENDING if pending else Status.POSTED,
                posted=0 if pending else amount,
                pending_delta=amount if pending else 0,
                now_ns=now_ns,
            ),
        )

    def _decide_resolution(self, op: TransferOp, now_ns: int) -> Outcome:
        assert op.pending_id is not None
        pid = op.pending_id
        p = self.pendings.get(pid) or self.resolved.get(pid) or self._recalled_pending(pid)
        if p is None:
            known = self.rows.get(pid) or self.recalled.rows.get(pid)
            mine = known is not None and known[ROW_DEBIT] in self.accounts
            return Outcome(op.id, Code.PENDING_NOT_PENDING if mine else Code.PENDING_NOT_FOUND)
        if (p.debit, p.credit) != (op.debit_account_id, op.credit_account_id):
            return Outcome(op.id, Code.PENDING_ACCOUNT_MISMATCH)
        if p.currency != op.currency:
            return Outcome(op.id, Code.CURRENCY_MISMATCH)
        if op.pending_id in self.locked_pendings:
            return Outcome(op.id, Code.TRANSFER_IN_FLIGHT)
        if p.state != Status.PENDING:
            return Outcome(op.id, _RESOLVED_CODE[p.state])
        if p.expires_at and now_ns >= p.expires_at:
            return Outcome(op.id, Code.PENDING_EXPIRED)
        if op.flags & TransferFlags.POST_PENDING:
            amount = p.amount if op.amount is None else op.amount
            if amount > p.amount:
                return Outcome(op.id, Code.EXCEEDS_PENDING_AMOUNT)
            row = self._row(op, amount, Status.POSTED, amount, -p.amount, now_ns)
        else:
            if op.amount is not None and op.amount != p.amount:
                return Outcome(op.id, Code.VOID_AMOUNT_MISMATCH)
            row = self._row(op, p.amount, Status.VOIDED, 0, -p.amount, now_ns)
        # Posting or voiding only lowers exposure on both sides: no limit to check.
        return Outcome(op.id, Code.OK, row)

    def _row(
        self, op: TransferOp, amount: int, status: str, posted: int, pending_delta: int, now_ns: int
    ) -> JournalRow:
        return JournalRow(
            op.id,
            op.debit_account_id,
            op.credit_account_id,
            amount,
            op.currency,
            op.flags,
            op.pending_id,
            op.timeout_s,
            op.metadata,
            status,
            posted,
            pending_delta,
            self.timestamp(now_ns),
        )

    # -- applying ---------------------------------------------------------

    def apply(self, row: JournalRow) -> bool:
        """Add ``row``'s effect to the local side(s). False if already applied or not ours."""
        if row.id in self.rows or row.id in self.credited:
            return False
        if row.debit_account_id not in self.accounts and row.credit_account_id not in self.accounts:
            return False
        # Later stamps follow every row seen, also across a rebuild: a restarted shard's
        # clock may be behind its last incarnation's stamps (they run ahead of the wall
        # clock in bursts, and a clock may step back), and a resolution stamped before
        # its pending would be replayed before it (tests/unit/test_rules.py pins it).
        if row.ts > self._clock:
            self._clock = row.ts
        self._shift(row, +1)
        return True

    def unapply(self, row: JournalRow) -> None:
        """Exactly reverse ``apply`` (used to roll back a failed linked chain)."""
        self._shift(row, -1)

    def _shift(self, row: JournalRow, sign: int) -> None:
        dr = self.accounts.get(row.debit_account_id)
        cr = self.accounts.get(row.credit_account_id)
        assert dr is not None or cr is not None, "row touches no account of this shard"
        if dr is not None:
            dr.dp += sign * row.posted_amount
            dr.dpend += sign * row.pending_delta
            assert dr.dpend >= 0 and dr.dp >= 0
            if sign > 0:
                self.rows[row.id] = astuple(row)
            else:
                self.rows.pop(row.id)
            self._shift_pending(row, sign)
        else:
            if sign > 0:
                self.credited[row.id] = True
            else:
                self.credited.pop(row.id)
            self._shift_credit_pending(row, sign)
        if cr is not None:
            cr.cp += sign * row.posted_amount
            cr.cpend += sign * row.pending_delta
            assert cr.cpend >= 0 and cr.cp >= 0

    def _shift_credit_pending(self, row: JournalRow, sign: int) -> None:
        if row.status == Status.PENDING:
            if sign > 0:
                self.credit_pendings[row.id] = row.amount
            else:
                del self.credit_pendings[row.id]
        elif row.pending_id is not None:
            if sign > 0:
                self.credit_pendings.pop(row.pending_id, None)
            else:
                self.credit_pendings[row.pending_id] = -row.pending_delta

    def _shift_pending(self, row: JournalRow, sign: int) -> None:
        if row.status == Status.PENDING:
            if sign > 0:
                p = self.pendings[row.id] = Pending(row)
                if p.expires_at:
                    heapq.heappush(self._expiry, (p.expires_at, row.id))
            else:
                del self.pendings[row.id]
        elif row.pending_id is not None:
            pid = row.pending_id
            if sign > 0:
                p = self.pendings.pop(pid)  # KeyError: a resolution of no open pending
                assert p.state == Status.PENDING, "pending resolved twice"
                p.state = row.status
                self.resolved[pid] = p
                if len(self._expiry) > 2 * len(self.pendings) + _HEAP_SLACK:
                    self._compact_expiry()
            else:
                back = self.resolved.pop(pid)
                assert back is not None
                back.state = Status.PENDING
                self.pendings[pid] = back

    def _compact_expiry(self) -> None:
        """Drop the timer entries of resolved pendings (they are skipped when reached, but
        a pending resolved long before its timeout would hold memory until then)."""
        self._expiry = [(p.expires_at, pid) for pid, p in self.pendings.items() if p.expires_at]
        heapq.heapify(self._expiry)

    # -- batches: the hot path ----------------------------------------------

    def execute_batch(
        self, b: TransferBatch, now_ns: int, recalled: Recalled = NOTHING_RECALLED
    ) -> tuple[BatchResult, list[Row]]:
        """Decide and apply every group of ``b`` in order; return the answers and new rows.

        ``recalled``: the journal's answer for ``unknown_in_batch(b)`` (nothing: every
        unknown id is new, as in tests that keep the whole window).

        A plain transfer (no flags, one group of its own, not a replay) is decided
        and applied inline on plain ints and tuples; anything else goes through
        ``execute``, which this path must agree with exactly (tests/unit/test_rules.py
        runs both against the same model). Rows come back in decision order.
        """
        n = len(b.ids)
        results = [APPLIED] * n
        stamps = [0] * n
        amounts: dict[int, int] = {}
        new_rows: list[Row] = []
        self.recalled = recalled
        try:
            self._execute_batch(b, now_ns, results, stamps, amounts, new_rows)
        finally:
            self.recalled = NOTHING_RECALLED
        return BatchResult(results, stamps, amounts), new_rows

    def _execute_batch(
        self, b: TransferBatch, now_ns: int, results: list, stamps: list[int],
        amounts: dict[int, int], new_rows: list[Row],
    ) -> None:  # fmt: skip
        n = len(b.ids)
        accounts, inflight = self.accounts, self.inflight_ids
        rows, old, known = self.rows.young, self.rows.old, self.recalled.rows
        ids, debits, credits, amts = b.ids, b.debits, b.credits, b.amounts
        currencies, flags, metadata = b.currencies, b.flags, b.metadata
        clock = self._clock if self._clock >= now_ns else now_ns - 1
        spans = batch_groups(b) if b.group_sizes else None
        for k in range(len(spans) if spans is not None else n):
            if spans is not None:
                start, end = spans[k]
            else:
                start, end = k, k + 1
            i = start
            tid = ids[i]
            if (
                end - start == 1 and not flags[i] and tid not in rows and tid not in old
                and tid not in known and tid not in inflight
            ):  # fmt: skip
                amount = amts[i]
                cur = currencies[i]
                dr = accounts[debits[i]]  # the front routes a transfer to its debit's shard
                cr = accounts.get(credits[i])  # None: on another shard, applied there
                if dr.currency != cur or (cr is not None and cr.currency != cur):
                    results[i] = _CURRENCY_MISMATCH
                    continue
                assert 0 < amount <= MAX_AMOUNT
                exposure = dr.dp + dr.dpend + amount
                if exposure > MAX_AMOUNT:
                    results[i] = _OVERFLOW
                    continue
                if dr.flags & DMNEC and exposure + dr.held_dr > dr.cp:
                    results[i] = _INSUFFICIENT_FUNDS
                    continue
                if cr is not None:
                    incoming = cr.cp + cr.cpend + amount
                    if incoming > MAX_AMOUNT:
                        results[i] = _OVERFLOW
                        continue
                    if cr.flags & CMNED and incoming + cr.held_cr > cr.dp:
                        results[i] = _CREDITS_EXCEED_DEBITS
                        continue
                    cr.cp += amount
                clock += 1
                row = (tid, debits[i], credits[i], amount, cur, 0, None, 0, metadata[i],
                       Status.POSTED, amount, 0, clock)  # fmt: skip
                dr.dp += amount
                rows[tid] = row
                new_rows.append(row)
                stamps[i] = clock
                continue
            # The general path: flags, chains, replays, ids in flight.
            self._clock = clock
            outcomes = self.execute(batch_ops(b, start, end), now_ns)
            clock = self._clock
            for j, o in enumerate(outcomes, start):
                if o.code:
                    results[j] = RESULT_OF[o.code]
                    continue
                decided = o.row
                assert decided is not None
                stamps[j] = decided.ts
                if not amts[j]:
                    amounts[j] = decided.amount
                if o.replayed:
                    results[j] = REPLAYED
                else:
                    new_rows.append(self.rows.get(decided.id) or astuple(decided))
        self._clock = clock

    # -- groups (a single transfer or a linked chain) -----------------------

    def execute(
        self, ops: Sequence[TransferOp], now_ns: int, recalled: Recalled | None = None
    ) -> list[Outcome]:
        """Decide and apply a group all-or-nothing. Every debit must be local.

        ``recalled``: the journal's answer for ``unknown(ops)`` (None: the batch's, when
        called from ``execute_batch``; nothing when every id is in the window)."""
        if recalled is None:
            return self._execute_group(ops, now_ns)
        self.recalled = recalled
        try:
            return self._execute_group(ops, now_ns)
        finally:
            self.recalled = NOTHING_RECALLED

    def _execute_group(self, ops: Sequence[TransferOp], now_ns: int) -> list[Outcome]:
        if len(ops) == 1:  # the common case, without the chain bookkeeping
            outcome = self.decide(ops[0], now_ns)
            if outcome.row is not None and not outcome.replayed:
                self.apply(outcome.row)
            return [outcome]
        outcomes, applied = self._evaluate(ops, now_ns)
        if _failed(outcomes):
            for row in reversed(applied):
                self.unapply(row)
        return outcomes

    def _evaluate(
        self, ops: Sequence[TransferOp], now_ns: int, debit_local_only: bool = False
    ) -> tuple[list[Outcome], list[JournalRow]]:
        outcomes: list[Outcome] = []
        applied: list[JournalRow] = []
        for i, op in enumerate(ops):
            if debit_local_only and op.debit_account_id not in self.accounts:
                outcome = self._credit_check(op, now_ns)
            else:
                outcome = self.decide(op, now_ns)
            if outcome.code:
                return refuse_group(ops, i, outcome.code), applied
            outcomes.append(outcome)
            if outcome.row is not None and not outcome.replayed and self.apply(outcome.row):
                applied.append(outcome.row)
        if (
            len(ops) > 1
            and any(o.replayed for o in outcomes)
            and not all(o.replayed for o in outcomes if o.row is not None)
        ):
            # Part of this chain was already committed on its own: not a replay.
            first = next(i for i, o in enumerate(outcomes) if o.replayed)
            return refuse_group(ops, first, Code.EXISTS), applied
        return outcomes, applied

    def _credit_check(self, op: TransferOp, now_ns: int) -> Outcome:
        """A remote-debit leg seen by the shard of a limited credit account.

        The leg's effect is applied to local state (by ``_evaluate``) so that
        later legs of the same chain see it; ``prepare`` rolls it back. Its
        validity (funds, pending state) is the debit shard's to decide.
        """
        cr = self.accounts.get(op.credit_account_id)
        if cr is None or op.id in self.credited or op.id in self.recalled.rows:
            return Outcome(op.id)
        if op.flags & RESOLVES_PENDING:
            # Posting or voiding only lowers exposure: nothing to check, but
            # a post credits the account, which later legs may spend.
            pending = self.credit_pendings.get(op.pending_id)  # type: ignore[arg-type]
            if pending is None:
                return Outcome(op.id)  # unknown here: the debit shard refuses it
            posted = 0
            if op.flags & TransferFlags.POST_PENDING:
                posted = pending if op.amount is None else min(op.amount, pending)
            status = Status.POSTED if posted else Status.VOIDED
            return Outcome(op.id, Code.OK, self._tentative(op, pending, status, posted, -pending))
        amount = op.amount
        assert amount is not None
        if cr.cp + cr.cpend + amount > MAX_AMOUNT:
            return Outcome(op.id, Code.OVERFLOW)
        if cr.flags & CMNED and cr.cp + cr.cpend + cr.held_cr + amount > cr.dp:
            return Outcome(op.id, Code.CREDITS_EXCEED_DEBITS)
        if op.flags & TransferFlags.PENDING:
            return Outcome(op.id, Code.OK, self._tentative(op, amount, Status.PENDING, 0, amount))
        return Outcome(op.id, Code.OK, self._tentative(op, amount, Status.POSTED, amount, 0))

    def _tentative(
        self, op: TransferOp, amount: int, status: str, posted: int, pending_delta: int
    ) -> JournalRow:
        """A credit leg evaluated here only to size what a prepared group reserves."""
        return JournalRow(
            op.id, op.debit_account_id, op.credit_account_id, amount, op.currency, op.flags,
            op.pending_id, op.timeout_s, op.metadata, status, posted, pending_delta, 0,
        )  # fmt: skip

    # -- two-phase groups across shards ------------------------------------

    def prepare(
        self, gid: str, ops: Sequence[TransferOp], now_ns: int,
        recalled: Recalled = NOTHING_RECALLED,
    ) -> list[Outcome]:  # fmt: skip
        """Phase one of a group that spans shards: decide the local legs and reserve.

        The group is evaluated in order on local state exactly as ``execute``
        would, then rolled back; what it would take from each local account
        (its net debit or credit exposure) is held until ``commit`` or
        ``abort``. Ids and pendings it touches are locked meanwhile.
        Outcomes carry rows only for transfers whose debit account is local.
        """
        assert gid not in self.holds
        before = {a: self._exposure(a) for a in self._local_accounts(ops)}
        self.recalled = recalled
        try:
            outcomes, applied = self._evaluate(ops, now_ns, debit_local_only=True)
        finally:
            self.recalled = NOTHING_RECALLED
        after = {a: self._exposure(a) for a in before}
        for row in reversed(applied):
            self.unapply(row)
        if _failed(outcomes) or all(o.replayed for o in outcomes):
            return outcomes
        hold = Hold()
        for account_id, (dr0, cr0) in before.items():
            dr1, cr1 = after[account_id]
            held = (account_id, max(0, dr1 - dr0), max(0, cr1 - cr0))
            acct = self.accounts[account_id]
            acct.held_dr += held[1]
            acct.held_cr += held[2]
            hold.accounts.append(held)
        for op in ops:
            if op.debit_account_id in self.accounts:
                hold.ids.append(op.id)
                if op.pending_id is not None:
                    hold.pendings.append(op.pending_id)
        self.inflight_ids.update(hold.ids)
        self.locked_pendings.update(hold.pendings)
        self.holds[gid] = hold
        return [
            o if o.row is None or o.row.debit_account_id in self.accounts else Outcome(o.id)
            for o in outcomes
        ]

    def release(self, gid: str) -> None:
        """Drop a prepared group's reservations (its rows are applied separately)."""
        hold = self.holds.pop(gid, None)
        if hold is None:
            return
        for account_id, held_dr, held_cr in hold.accounts:
            acct = self.accounts[account_id]
            acct.held_dr -= held_dr
            acct.held_cr -= held_cr
            assert acct.held_dr >= 0 and acct.held_cr >= 0
        self.inflight_ids.difference_update(hold.ids)
        self.locked_pendings.difference_update(hold.pendings)

    def _local_accounts(self, ops: Iterable[TransferOp]) -> list[str]:
        seen: dict[str, None] = {}
        for op in ops:
            for a in (op.debit_account_id, op.credit_account_id):
                if a in self.accounts:
                    seen[a] = None
        return list(seen)

    def _exposure(self, account_id: str) -> tuple[int, int]:
        a = self.accounts[account_id]
        return a.dp + a.dpend - a.cp, a.cp + a.cpend - a.dp

    # -- expiry -----------------------------------------------------------

    def next_expiry(self) -> int | None:
        """When the earliest pending still in the timer heap expires (ns), or None.

        Entries of pendings resolved since are only dropped when reached, so this may
        be early, never late: a pass at that time finds nothing or something.
        """
        return self._expiry[0][0] if self._expiry else None

    def expire_due(self, now_ns: int, limit: int) -> list[JournalRow]:
        """Rows releasing pendings whose timeout has passed (applied here already)."""
        out: list[JournalRow] = []
        deferred: list[tuple[int, str]] = []
        while self._expiry and self._expiry[0][0] <= now_ns and len(out) < limit:
            expires_at, pid = heapq.heappop(self._expiry)
            p = self.pendings.get(pid)
            if p is None or p.state != Status.PENDING or p.expires_at != expires_at:
                continue  # resolved, or an entry left by a rolled-back chain
            if pid in self.locked_pendings:
                deferred.append((expires_at, pid))
                continue
            row = JournalRow(
                EXPIRY_PREFIX + pid, p.debit, p.credit, p.amount, p.currency,
                TransferFlags.VOID_PENDING, pid, 0, NO_METADATA, Status.EXPIRED,
                0, -p.amount, self.timestamp(now_ns),
            )  # fmt: skip
            self.apply(row)
            out.append(row)
        for item in deferred:
            heapq.heappush(self._expiry, item)
        return out

    # -- views --------------------------------------------------------------

    def balances(self) -> list[AccountBalances]:
        return [a.balances() for a in self.accounts.values()]


def rebuilt(snapshot: ShardSnapshot, window: int = 0, max_accounts: int = 0) -> Ledger:
    """A shard's ledger from what the journal holds: its accounts, the checkpoint if
    any, then the rows after it in replay order (everything here is journaled, so the
    window ages as it fills). Journaled accounts are all loaded, even beyond
    ``max_accounts`` (a budget lowered since): only new ones are refused."""
    ledger = Ledger(window)
    for spec in snapshot.accounts:
        ledger.create_account(spec)
    ledger.max_accounts = max_accounts
    if snapshot.checkpoint is not None:
        c = snapshot.checkpoint
        ledger.restore(c.balances, c.pendings, c.clock)
    for k, row in enumerate(snapshot.rows):
        ledger.apply(row)
        if not k & 1023 and ledger.window_full():
            ledger.age()
    return ledger


_HEAP_SLACK = 1024  # timer entries of resolved pendings tolerated before a compaction
_CURRENCY_MISMATCH = RESULT_OF[Code.CURRENCY_MISMATCH]
_OVERFLOW = RESULT_OF[Code.OVERFLOW]
_INSUFFICIENT_FUNDS = RESULT_OF[Code.INSUFFICIENT_FUNDS]
_CREDITS_EXCEED_DEBITS = RESULT_OF[Code.CREDITS_EXCEED_DEBITS]

_RESOLVED_CODE = {
    Status.POSTED: Code.PENDING_ALREADY_POSTED,
    Status.VOIDED: Code.PENDING_ALREADY_VOIDED,
    Status.EXPIRED: Code.PENDING_EXPIRED,
}


def _failed(outcomes: Sequence[Outcome]) -> bool:
    return any(o.code for o in outcomes)


def refuse_group(ops: Sequence[TransferOp], index: int, code: str) -> list[Outcome]:
    """Outcomes for a group whose transfer ``index`` failed with ``code``: all or nothing."""
    if len(ops) == 1:
        return [Outcome(ops[0].id, code)]
    return [
        Outcome(op.id, code if i == index else Code.LINKED_EVENT_FAILED) for i, op in enumerate(ops)
    ]
