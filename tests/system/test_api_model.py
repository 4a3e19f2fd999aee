"""A stateful property test of the HTTP ledger API against a pure-Python reference model.

``Model`` restates, naively and from the README/API docs alone, what the transfer endpoints
promise: accounts hold four balances (debits/credits, posted/pending) and at most one limit flag
(``debits_must_not_exceed_credits``: debits_posted + debits_pending <= credits_posted;
``credits_must_not_exceed_debits``: credits_posted + credits_pending <= debits_posted); a
transfer is posted or pending; a pending is posted (in whole or in part) or voided once; a
transfer id is an idempotency key (the same body again replays the first answer with no second
effect, another body is 409 ``exists_with_different_fields``); a batch is applied in request
order and a ``linked`` run closed by an unlinked transfer succeeds or fails as a whole (the
failing member gets its code, the others ``linked_event_failed``). The model is plain dicts; it
rolls a chain back by restoring a copy of itself. It does not import the node's rules
(``actors/ledger/rules.py``). Where a transfer breaks several rules at once and the docs do not
say which one is reported, the model accepts any of them; likewise ``pending_not_found`` or
``pending_transfer_not_pending`` for a post/void that omits its accounts and names a transfer
that is not a pending. As docs/architecture.md describes, the checks that need no balances
(same account, accounts exist, currency, filling a post/void from its pending) run over the
whole request before anything is decided, and a chain that is partly an earlier committed
transfer is refused with ``exists`` (the node's problem table).

``ApiMachine`` drives one real node (PostgreSQL journal, two Ray shards, HTTP) and the model
with the same requests, the model deciding first, and compares:

* every answer: HTTP status (201 new, 200 replay, 409 conflict, 422 refusal), the refusal
  ``code``, the transfer as answered (every field but the node's timestamp), and for a replay
  the first answer exactly, timestamp included; each batch result (``status`` or ``code``);
* ``GET /v1/transfers/{id}`` and ``GET /v1/accounts/{id}/transfers`` against the transfers the
  model committed;
* after every step (invariant): each model account's ``GET /v1/accounts/{id}`` (the four
  balances, ``balance``, ``available``, currency, flags) against the model, and debits equal
  credits (posted and pending) per currency over the model's accounts;
* at the end of each example: the same balances summed from the PostgreSQL journal.

All hypothesis examples share one node; each uses its own account and transfer ids (a
per-example prefix). The strategy picks the shard of each account (ids are chosen by their
shard hash), so credit legs to another shard and two-phase groups are exercised and show in a
shrunk example. Amounts are small integers (no overflow paths) and pendings never time out
within a run (``timeout_s`` is absent or 3600), so nothing depends on the clock.

The machine found two bugs, both wrong codes for refusals across shards (nothing moved): a
reused id with a debit account on another shard, and a post/void naming accounts on another
shard than its pending's. ``api/ledger_client._correct_misrouted`` fixes them;
``test_cross_shard_refusals_get_the_documented_codes`` pins the minimal reproductions.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import ClassVar

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from paynode.domain.ledger.model import shard_key  # placement of ids only, not ledger semantics
from paynode.storage.audit import journal_balances

SHARDS = 2
NO_OVERDRAFT = "debits_must_not_exceed_credits"
CREDIT_LIMIT = "credits_must_not_exceed_debits"
ACCOUNT_FLAG_ORDER = (NO_OVERDRAFT, CREDIT_LIMIT)  # as the API lists them
TRANSFER_FLAG_ORDER = ("pending", "post_pending", "void_pending", "linked")
RESOLVES = ("post_pending", "void_pending")
CONFLICTS = frozenset({"exists_with_different_fields", "exists"})  # 409; other refusals 422
BIG = 10**9  # more than any account here ever holds: debiting it always overdraws
MAX_ACCOUNTS = 8
METADATA = ({}, {"k": "v"}, {"a": "1", "b": "2"})

MODEL_SETTINGS = settings(
    max_examples=12,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------------------
# The reference model
# ---------------------------------------------------------------------------


@dataclass
class Account:
    currency: str
    flags: tuple[str, ...]
    dp: int = 0  # debits_posted
    cp: int = 0  # credits_posted
    dpend: int = 0  # debits_pending
    cpend: int = 0  # credits_pending


@dataclass
class Transfer:
    """A committed transfer: the request in normal form, the row it made, what the node said."""

    key: tuple
    row: dict  # the transfer as the API must describe it, without its timestamp
    pending_amount: int = 0  # a pending's amount; 0 for any other transfer
    state: str = ""  # a pending's state: pending | posted | voided
    resolved_by: str | None = None  # a resolved pending's: the post or void that did it
    answer: dict | None = None  # the node's full answer, once seen (replays must equal it)


@dataclass(frozen=True)
class Expect:
    """The model's answer for one transfer: ``codes`` (any of them) if refused, else a row."""

    codes: frozenset[str] = frozenset()
    replay: bool = False
    row: dict | None = None


def refuse(n: int, index: int, codes: frozenset[str]) -> list[Expect]:
    """A group of ``n`` refused because of member ``index``: all or nothing."""
    linked = Expect(frozenset({"linked_event_failed"}))
    return [Expect(codes) if i == index else linked for i in range(n)]


def flags_of(req: dict) -> list[str]:
    return req.get("flags", [])


def resolves(req: dict) -> bool:
    return any(f in RESOLVES for f in flags_of(req))


@dataclass
class Model:
    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)

    # -- requests in normal form ------------------------------------------

    def effective_amount(self, req: dict) -> int | None:
        """A post or void without an amount means the whole pending amount."""
        if req.get("amount") is not None or not resolves(req):
            return req.get("amount")
        p = self.transfers.get(req.get("pending_id", ""))
        return p.pending_amount or None if p is not None else None

    def key(self, req: dict) -> tuple:
        """What makes two bodies "the same": field values, not their spelling or order."""
        return (
            req.get("debit_account_id"),
            req.get("credit_account_id"),
            req.get("currency"),
            self.effective_amount(req),
            frozenset(flags_of(req)),
            req.get("pending_id"),
            req.get("timeout_s"),
            tuple(sorted(req.get("metadata", {}).items())),
        )

    # -- checks that need no balances (the whole request, before anything is decided) --

    def front(self, req: dict, request_pendings: dict[str, dict]) -> tuple[dict, frozenset[str]]:
        """Fill a post/void's omitted fields from its pending; check accounts and currency."""
        dr_id = req.get("debit_account_id")
        if dr_id is not None and dr_id == req.get("credit_account_id"):
            return req, frozenset({"same_account"})
        if resolves(req) and dr_id is None:
            pid = req["pending_id"]
            source = request_pendings.get(pid)
            p = self.transfers.get(pid)
            if source is None and p is not None and p.pending_amount:
                source = p.row
            if source is None:
                # Nothing to take the accounts from. If the id is a transfer that is not a
                # pending, "not pending" reads as right as "no such pending".
                if p is not None:
                    return req, frozenset({"pending_not_found", "pending_transfer_not_pending"})
                return req, frozenset({"pending_not_found"})
            req = req | {
                "debit_account_id": source["debit_account_id"],
                "credit_account_id": source["credit_account_id"],
                "currency": source["currency"],
            }
        dr = self.accounts.get(req["debit_account_id"])
        cr = self.accounts.get(req["credit_account_id"])
        if dr is None or cr is None:
            return req, frozenset({"account_not_found"})
        if not dr.currency == cr.currency == req["currency"]:
            return req, frozenset({"currency_mismatch"})
        return req, frozenset()

    # -- deciding one transfer against the balances ---------------------------------

    def refused_if_new(self, req: dict) -> bool:
        """Whether ``req`` would be refused were its id never used (no change to the model)."""
        old = self.transfers.pop(req["id"])
        try:
            return bool(self.decide(req).codes)
        finally:
            self.transfers[req["id"]] = old

    def decide(self, req: dict) -> Expect:
        old = self.transfers.get(req["id"])
        if old is not None:
            if self.key(req) == old.key:
                return Expect(replay=True, row=old.row)
            return Expect(frozenset({"exists_with_different_fields"}))
        dr = self.accounts[req["debit_account_id"]]
        cr = self.accounts[req["credit_account_id"]]
        flags = flags_of(req)
        problems: list[str] = []
        if resolves(req):
            p = self.transfers.get(req["pending_id"])
            if p is None:
                return Expect(frozenset({"pending_not_found"}))
            if not p.pending_amount:
                return Expect(frozenset({"pending_transfer_not_pending"}))
            pair = (req["debit_account_id"], req["credit_account_id"])
            if pair != (p.row["debit_account_id"], p.row["credit_account_id"]):
                problems.append("pending_account_mismatch")
            amount = req.get("amount")
            if p.state != "pending":
                problems.append(f"pending_already_{p.state}")
            elif "post_pending" in flags and amount is not None and amount > p.pending_amount:
                problems.append("exceeds_pending_amount")
            elif "void_pending" in flags and amount is not None and amount != p.pending_amount:
                problems.append("void_amount_mismatch")
            if "post_pending" in flags:
                status, amount = "posted", p.pending_amount if amount is None else amount
            else:
                status, amount = "voided", p.pending_amount
        else:
            amount = req["amount"]
            if NO_OVERDRAFT in dr.flags and dr.dp + dr.dpend + amount > dr.cp:
                problems.append("insufficient_funds")
            if CREDIT_LIMIT in cr.flags and cr.cp + cr.cpend + amount > cr.dp:
                problems.append("credits_exceed_debits")
            status = "pending" if "pending" in flags else "posted"
        if problems:
            return Expect(frozenset(problems))
        row = {
            "id": req["id"],
            "status": status,
            "debit_account_id": req["debit_account_id"],
            "credit_account_id": req["credit_account_id"],
            "amount": amount,
            "currency": req["currency"],
            "flags": [f for f in TRANSFER_FLAG_ORDER if f in flags],
            "pending_id": req.get("pending_id"),
            "timeout_s": req.get("timeout_s"),
            "metadata": req.get("metadata", {}),
            "resolved_by": None,
        }
        return Expect(row=row)

    def apply(self, req: dict, row: dict) -> None:
        dr = self.accounts[row["debit_account_id"]]
        cr = self.accounts[row["credit_account_id"]]
        amount = row["amount"]
        t = Transfer(self.key(req), row)
        if row["status"] == "pending":
            dr.dpend += amount
            cr.cpend += amount
            t.pending_amount, t.state = amount, "pending"
        else:
            if row["status"] == "posted":
                dr.dp += amount
                cr.cp += amount
            if row["pending_id"] is not None:
                p = self.transfers[row["pending_id"]]
                dr.dpend -= p.pending_amount
                cr.cpend -= p.pending_amount
                p.state = row["status"]
                p.resolved_by = row["id"]
        self.transfers[row["id"]] = t

    # -- groups and batches -------------------------------------------------------

    def run_group(self, reqs: list[dict], request_pendings: dict[str, dict]) -> list[Expect]:
        """One transfer or one linked chain: in order, each seeing the earlier ones, all or
        nothing. Checks that need no balances run over the whole group first."""
        n = len(reqs)
        filled = []
        for i, req in enumerate(reqs):
            req, codes = self.front(req, request_pendings)
            if codes:
                return refuse(n, i, codes)
            filled.append(req)
        if "linked" in flags_of(reqs[-1]):
            return refuse(n, n - 1, frozenset({"linked_event_chain_open"}))
        saved = copy.deepcopy((self.accounts, self.transfers))
        out: list[Expect] = []
        for i, req in enumerate(filled):
            e = self.decide(req)
            if e.codes:
                self.accounts, self.transfers = saved
                return refuse(n, i, e.codes)
            if not e.replay:
                assert e.row is not None
                self.apply(req, e.row)
            out.append(e)
        replays = [i for i, e in enumerate(out) if e.replay]
        if n > 1 and replays and len(replays) < n:
            # Part of the chain was committed before on its own: neither new nor a replay.
            self.accounts, self.transfers = saved
            return refuse(n, replays[0], frozenset({"exists"}))
        return out

    def run_batch(self, reqs: list[dict]) -> list[Expect]:
        """A request: its groups (runs of linked transfers closed by an unlinked one)."""
        request_pendings = {r["id"]: r for r in reqs if "pending" in flags_of(r)}
        out: list[Expect] = []
        group: list[dict] = []
        for i, req in enumerate(reqs):
            group.append(req)
            if "linked" not in flags_of(req) or i == len(reqs) - 1:
                out += self.run_group(group, request_pendings)
                group = []
        return out


# ---------------------------------------------------------------------------
# The machine: the same requests to the node and to the model
# ---------------------------------------------------------------------------


def without_timestamp(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "timestamp"}


class ApiMachine(RuleBasedStateMachine):
    node: ClassVar[object] = None  # the running node, set by the test
    examples: ClassVar[itertools.count] = itertools.count()
    steps: ClassVar[int] = 0
    requests: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self.http = self.node.http  # type: ignore[attr-defined]
        self.model = Model()
        self.prefix = f"m{next(ApiMachine.examples)}"
        self.names = itertools.count()
        self.account_ids: list[str] = []
        self.ghost = f"{self.prefix}-ghost"  # an account id never created
        self.singles: list[dict] = []  # every single transfer request sent, for replays
        self.batches: list[list[dict]] = []
        self.sent_ids: list[str] = []

    # -- helpers --------------------------------------------------------------------

    def fresh_id(self, kind: str) -> str:
        return f"{self.prefix}-{kind}{next(self.names)}"

    def account_id_on(self, shard: int) -> str:
        while True:
            candidate = self.fresh_id("a")
            if shard_key(candidate) % SHARDS == shard:
                return candidate

    def expected_account(self, account_id: str) -> dict:
        a = self.model.accounts[account_id]
        balance = a.cp - a.dp
        return {
            "id": account_id,
            "currency": a.currency,
            "flags": list(a.flags),
            "debits_posted": a.dp,
            "credits_posted": a.cp,
            "debits_pending": a.dpend,
            "credits_pending": a.cpend,
            "balance": balance,
            "available": balance - a.dpend,
            "metadata": {},
            "owner_user_id": None,
        }

    def post(self, path: str, body: dict):
        ApiMachine.requests += 1
        r = self.http.post(path, json=body)
        note(f"POST {path} {body} -> {r.status_code} {r.text}")
        return r

    def get(self, path: str, **params):
        ApiMachine.requests += 1
        return self.http.get(path, params=params or None)

    def open_account(self, currency: str, flags: tuple[str, ...], shard: int, seed: int) -> None:
        """Create an account; give a limited one room (``seed``) from an unlimited one."""
        account_id = self.account_id_on(shard)
        body = {"id": account_id, "currency": currency, "flags": list(flags)}
        r = self.post("/v1/accounts", body)
        assert r.status_code == 201, r.text
        self.model.accounts[account_id] = Account(currency, flags)
        self.account_ids.append(account_id)
        assert without_timestamp(r.json()) == self.expected_account(account_id)
        free = [
            a
            for a in self.account_ids
            if not self.model.accounts[a].flags and self.model.accounts[a].currency == currency
        ]
        if flags and free:
            dr, cr = (free[0], account_id) if NO_OVERDRAFT in flags else (account_id, free[0])
            self.send({"id": self.fresh_id("seed"), "debit_account_id": dr,
                       "credit_account_id": cr, "amount": seed, "currency": currency})  # fmt: skip

    def check_transfer(self, transfer_id: str, body: dict, read: bool = False) -> None:
        """``body`` describes a committed transfer: as the model says, or as first answered.
        ``read``: a GET, where a resolved pending shows its outcome and what resolved it."""
        t = self.model.transfers[transfer_id]
        assert isinstance(body.get("timestamp"), int), body
        if read and t.resolved_by is not None:
            assert (body["status"], body["resolved_by"]) == (t.state, t.resolved_by), (body, t)
            body = {**body, "status": "pending", "resolved_by": None}  # as it was applied
        if t.answer is None:
            assert without_timestamp(body) == t.row, (body, t.row)
            t.answer = body
        else:
            assert body == t.answer, ("replay differs from the first answer", body, t.answer)

    def send(self, req: dict) -> None:
        """POST one transfer; the model decides first, then the node must agree."""
        [e] = self.model.run_batch([req])
        self.singles.append(req)
        self.sent_ids.append(req["id"])
        r = self.post("/v1/transfers", req)
        if e.codes:
            assert r.status_code in {409 if c in CONFLICTS else 422 for c in e.codes}, (
                req, sorted(e.codes), r.status_code, r.text,
            )  # fmt: skip
            assert r.headers["content-type"].startswith("application/problem+json")
            got = r.json()["code"]
            assert got in e.codes, (req, sorted(e.codes), r.text)
            assert r.status_code == (409 if got in CONFLICTS else 422), r.text
        else:
            assert r.status_code == (200 if e.replay else 201), (req, e, r.status_code, r.text)
            self.check_transfer(req["id"], r.json())

    def send_batch(self, reqs: list[dict]) -> None:
        expects = self.model.run_batch(reqs)
        self.batches.append(reqs)
        self.sent_ids += [t["id"] for t in reqs]
        r = self.post("/v1/transfers/batch", {"transfers": reqs})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["id"] for x in results] == [t["id"] for t in reqs], results
        for req, e, got in zip(reqs, expects, results, strict=True):
            if e.codes:
                assert set(got) == {"id", "code"} and got["code"] in e.codes, (
                    req, sorted(e.codes), got, results,
                )  # fmt: skip
            else:
                assert e.row is not None
                assert got == {"id": req["id"], "status": e.row["status"]}, (req, e, results)

    def pair(self, data: st.DataObject) -> tuple[str, str]:
        """Two accounts, in one currency when there are such."""
        dr = data.draw(st.sampled_from(self.account_ids), label="debit")
        others = [a for a in self.account_ids if a != dr]
        currency = self.model.accounts[dr].currency
        same = [a for a in others if self.model.accounts[a].currency == currency]
        cr = data.draw(st.sampled_from(same or others), label="credit")
        return dr, cr

    def with_flag(self, flag: str) -> list[str]:
        return [a for a in self.account_ids if flag in self.model.accounts[a].flags]

    def plain(self, data: st.DataObject, dr: str, cr: str, amount: int) -> dict:
        """A posted or pending transfer dr -> cr in dr's currency."""
        req = {
            "id": self.fresh_id("t"),
            "debit_account_id": dr,
            "credit_account_id": cr,
            "amount": amount,
            "currency": self.model.accounts[dr].currency,
        }
        flags = []
        if data.draw(st.integers(0, 2), label="pending?") == 0:
            flags.append("pending")
            if data.draw(st.booleans(), label="timeout?"):
                req["timeout_s"] = 3600
        if flags:
            req["flags"] = flags
        metadata = data.draw(st.sampled_from(METADATA), label="metadata")
        if metadata:
            req["metadata"] = dict(metadata)
        return req

    def pendings(self, *, open_only: bool) -> list[str]:
        return [
            tid
            for tid, t in self.model.transfers.items()
            if t.pending_amount and (t.state == "pending" or not open_only)
        ]

    # -- rules ------------------------------------------------------------------------

    account_kinds = st.tuples(
        st.sampled_from(["USD", "USD", "USD", "EUR"]),
        st.sampled_from([(), (), (NO_OVERDRAFT,), (NO_OVERDRAFT,), (CREDIT_LIMIT,)]),
        st.integers(0, SHARDS - 1),
        st.integers(50, 300),
    )

    @initialize(bank_shard=st.integers(0, SHARDS - 1), second=account_kinds)
    def two_accounts(self, bank_shard, second) -> None:
        """An unlimited USD account (the first source of money), and another USD account."""
        self.open_account("USD", (), bank_shard, 0)
        self.open_account("USD", *second[1:])

    @rule(data=st.data())
    def account(self, data: st.DataObject) -> None:
        """Open an account, or send an existing account's body again (same or changed)."""
        if len(self.account_ids) < MAX_ACCOUNTS and data.draw(st.booleans(), label="new?"):
            self.open_account(*data.draw(self.account_kinds, label="kind"))
        else:
            self.account_again(data)

    def account_again(self, data: st.DataObject) -> None:
        """Same body: 200 and the account as it is now. Other fields: 409, nothing changes."""
        account_id = data.draw(st.sampled_from(self.account_ids), label="account")
        a = self.model.accounts[account_id]
        change = data.draw(st.sampled_from(["none", "flags", "currency", "both_limits"]))
        body = {"id": account_id, "currency": a.currency, "flags": list(a.flags)}
        if change == "flags":
            body["flags"] = [] if a.flags else [CREDIT_LIMIT]
        elif change == "currency":
            body["currency"] = "EUR" if a.currency == "USD" else "USD"
        elif change == "both_limits":
            body["flags"] = list(ACCOUNT_FLAG_ORDER)
        r = self.post("/v1/accounts", body)
        if change == "none":
            assert r.status_code == 200, r.text
            assert without_timestamp(r.json()) == self.expected_account(account_id)
        elif change == "both_limits":
            assert (r.status_code, r.json()["code"]) == (422, "flags_are_mutually_exclusive")
        else:
            assert (r.status_code, r.json()["code"]) == (409, "exists_with_different_fields")

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        """A posted or pending transfer, sometimes aimed at a limit or malformed on purpose;
        or a post or void of a pending (``resolve``)."""
        kinds = ["any", "any", "any", "overdraw", "exact", "over_limit", "odd", "ghost"]
        if self.pendings(open_only=False):
            kinds += ["resolve"] * 4
        kind = data.draw(st.sampled_from(kinds), label="kind")
        if kind == "resolve":
            self.resolve(data)
            return
        dr, cr = self.pair(data)
        amount = data.draw(st.integers(1, 40), label="amount")
        limited = self.with_flag(NO_OVERDRAFT)
        if kind in ("overdraw", "exact") and limited:
            dr = data.draw(st.sampled_from(limited), label="limited debit")
            cr = data.draw(st.sampled_from([a for a in self.account_ids if a != dr]))
            a = self.model.accounts[dr]
            room = a.cp - a.dp - a.dpend
            extra = data.draw(st.integers(1, 5)) if kind == "overdraw" else 0
            amount = max(1, room + extra)
        capped = self.with_flag(CREDIT_LIMIT)
        if kind == "over_limit" and capped:
            cr = data.draw(st.sampled_from(capped), label="capped credit")
            dr = data.draw(st.sampled_from([a for a in self.account_ids if a != cr]))
            a = self.model.accounts[cr]
            amount = max(1, a.dp - a.cp - a.cpend + data.draw(st.integers(0, 3)))
        req = self.plain(data, dr, cr, amount)
        if kind == "odd":
            odd = data.draw(st.sampled_from(["same_account", "currency"]), label="odd")
            if odd == "same_account":
                req["credit_account_id"] = dr
            else:
                req["currency"] = "EUR" if req["currency"] == "USD" else "USD"
        elif kind == "ghost":
            side = data.draw(st.sampled_from(["debit_account_id", "credit_account_id"]))
            req[side] = self.ghost
        self.send(req)

    def resolve(self, data: st.DataObject) -> None:
        """Post (whole or part) or void a pending; sometimes one already resolved, a transfer
        that is not a pending, an unknown id, too much, or with the accounts swapped."""
        open_pendings = self.pendings(open_only=True)
        target = data.draw(
            st.sampled_from(["open"] * 5 + ["any_pending", "not_pending", "unknown"]),
            label="target",
        )
        if target == "open" and open_pendings:
            pid = data.draw(st.sampled_from(open_pendings), label="pending")
        elif target in ("open", "any_pending") and self.pendings(open_only=False):
            pid = data.draw(st.sampled_from(self.pendings(open_only=False)), label="pending")
        elif target == "not_pending" and len(self.pendings(open_only=False)) < len(
            self.model.transfers
        ):
            others = [t for t in self.model.transfers if t not in self.pendings(open_only=False)]
            pid = data.draw(st.sampled_from(others), label="not a pending")
        else:
            pid = self.fresh_id("nope")
        req: dict = {"id": self.fresh_id("r"), "pending_id": pid}
        action = data.draw(st.sampled_from(["post_pending", "void_pending"]), label="action")
        req["flags"] = [action]
        p = self.model.transfers.get(pid)
        full = p.row["amount"] if p is not None else 10
        amount = data.draw(
            st.sampled_from(["none", "none", "full", "partial", "too_much"]), label="amount"
        )
        if amount == "full":
            req["amount"] = full
        elif amount == "partial" and full > 1:
            req["amount"] = data.draw(st.integers(1, full - 1), label="partial")
        elif amount == "too_much":
            req["amount"] = full + 1
        accounts = data.draw(st.sampled_from(["omit", "same", "swapped"]), label="accounts")
        if accounts != "omit":
            if p is not None:
                dr, cr = p.row["debit_account_id"], p.row["credit_account_id"]
            else:
                dr, cr = self.pair(data)
            if accounts == "swapped":
                dr, cr = cr, dr
            req |= {
                "debit_account_id": dr,
                "credit_account_id": cr,
                "currency": self.model.accounts[dr].currency,
            }
        self.send(req)

    @precondition(lambda self: self.singles)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A transfer request sent before, again: the same body, or one field changed."""
        if data.draw(st.booleans(), label="same body?"):
            self.replay_same(data)
        else:
            self.replay_changed(data)

    def replay_same(self, data: st.DataObject) -> None:
        """A request sent before, again (metadata keys perhaps in another order)."""
        req = dict(data.draw(st.sampled_from(self.singles), label="earlier"))
        if "metadata" in req and data.draw(st.booleans(), label="reorder"):
            req["metadata"] = dict(reversed(list(req["metadata"].items())))
        self.send(req)

    def replay_changed(self, data: st.DataObject) -> None:
        """A request sent before with one field changed: 409 if that id is committed."""
        req = copy.deepcopy(data.draw(st.sampled_from(self.singles), label="earlier"))
        what = ["amount", "metadata"]
        if not resolves(req):
            what += ["pending", "debit"]
        if "pending" in flags_of(req):
            what.append("timeout")
        change = data.draw(st.sampled_from(what), label="change")
        if change == "amount":
            amount = req.get("amount")
            req["amount"] = data.draw(st.integers(1, 50)) if amount is None else amount + 1
        elif change == "metadata":
            req["metadata"] = {"changed": "yes"}
        elif change == "timeout":
            req["timeout_s"] = 3601 if req.get("timeout_s") else 3600
        elif change == "pending":
            if "pending" in flags_of(req):
                req.pop("flags")
                req.pop("timeout_s", None)
            else:
                req["flags"] = ["pending"]
        else:  # another debit account, in the same currency (maybe on another shard)
            others = [
                a
                for a in self.account_ids
                if a not in (req["debit_account_id"], req["credit_account_id"])
                and self.model.accounts[a].currency == req["currency"]
            ]
            if not others:
                return
            req["debit_account_id"] = data.draw(st.sampled_from(others), label="new debit")
        self.send(req)

    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        """A new batch (``new_batch``), or one sent before, again, verbatim."""
        if self.batches and data.draw(st.integers(0, 3), label="replay batch?") == 0:
            self.send_batch(data.draw(st.sampled_from(self.batches), label="earlier batch"))
        else:
            self.new_batch(data)

    def new_batch(self, data: st.DataObject) -> None:
        """A linked chain (one member perhaps failing on purpose, perhaps left open, perhaps
        ending with an earlier committed transfer), then maybe an unrelated transfer."""
        n = data.draw(st.integers(1, 3), label="chain length")
        fail_at = data.draw(st.sampled_from([None] * (n + 1) + list(range(n))), label="fail at")
        chain: list[dict] = []
        for i in range(n):
            linked = i < n - 1
            dr, cr = self.pair(data)
            amount = data.draw(st.integers(1, 30), label="amount")
            pendings = [t["id"] for t in chain if "pending" in flags_of(t)]
            pendings += self.pendings(open_only=True)
            if i == fail_at:
                req = self.failing(data)
            elif pendings and data.draw(st.integers(0, 3), label="resolve?") == 0:
                pid = data.draw(st.sampled_from(pendings), label="pending")
                action = data.draw(st.sampled_from(["post_pending", "void_pending"]))
                req = {"id": self.fresh_id("r"), "pending_id": pid, "flags": [action]}
                if action == "post_pending" and data.draw(st.booleans(), label="part?"):
                    req["amount"] = 1
            else:
                req = self.plain(data, dr, cr, amount)
            if linked:
                req["flags"] = [*flags_of(req), "linked"]
            chain.append(req)
        ending = data.draw(st.sampled_from(["closed"] * 4 + ["open", "replayed"]))
        committed = [r for r in self.singles if r["id"] in self.model.transfers and not resolves(r)]
        if ending == "open":
            chain[-1]["flags"] = [*flags_of(chain[-1]), "linked"]
        elif ending == "replayed" and committed:
            chain[-1]["flags"] = [*flags_of(chain[-1]), "linked"]
            chain.append(data.draw(st.sampled_from(committed), label="committed single"))
        if ending != "open":
            used = {r.get(k) for r in chain for k in ("debit_account_id", "credit_account_id")}
            for pid in (r.get("pending_id") for r in chain):
                if pid in self.model.transfers:
                    row = self.model.transfers[pid].row
                    used |= {row["debit_account_id"], row["credit_account_id"]}
            free = [a for a in self.account_ids if a not in used]
            if len(free) >= 2 and data.draw(st.booleans(), label="standalone?"):
                dr = data.draw(st.sampled_from(free), label="standalone debit")
                cr = data.draw(st.sampled_from([a for a in free if a != dr]))
                if self.model.accounts[dr].currency == self.model.accounts[cr].currency:
                    chain.append(self.plain(data, dr, cr, data.draw(st.integers(1, 30))))
        self.send_batch(chain)

    def failing(self, data: st.DataObject) -> dict:
        """A chain member meant to be refused when decided, whatever came before it."""
        options = ["unknown_pending"]
        if self.with_flag(NO_OVERDRAFT):
            options.append("overdraw")
        if self.with_flag(CREDIT_LIMIT):
            options.append("over_limit")
        how = data.draw(st.sampled_from(options), label="failing how")
        if how == "overdraw":
            dr = data.draw(st.sampled_from(self.with_flag(NO_OVERDRAFT)))
            cr = data.draw(st.sampled_from([a for a in self.account_ids if a != dr]))
            return self.plain(data, dr, cr, BIG)
        if how == "over_limit":
            cr = data.draw(st.sampled_from(self.with_flag(CREDIT_LIMIT)))
            dr = data.draw(st.sampled_from([a for a in self.account_ids if a != cr]))
            return self.plain(data, dr, cr, BIG)
        dr, cr = self.pair(data)
        return {
            "id": self.fresh_id("r"),
            "pending_id": self.fresh_id("nope"),
            "flags": ["post_pending"],
            "debit_account_id": dr,
            "credit_account_id": cr,
            "currency": self.model.accounts[dr].currency,
        }

    @precondition(lambda self: self.sent_ids)
    @rule(data=st.data())
    def read_transfers(self, data: st.DataObject) -> None:
        """GET a transfer by id, and an account's transfer list, against the model."""
        tid = data.draw(st.sampled_from(self.sent_ids), label="transfer")
        r = self.get(f"/v1/transfers/{tid}")
        if tid in self.model.transfers:
            assert r.status_code == 200, r.text
            self.check_transfer(tid, r.json(), read=True)
        else:
            assert (r.status_code, r.json()["code"]) == (404, "transfer_not_found"), r.text
        account_id = data.draw(st.sampled_from(self.account_ids), label="account")
        r = self.get(f"/v1/accounts/{account_id}/transfers", limit=1000)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["next_cursor"] is None
        listed = page["data"]
        expected = {
            tid
            for tid, t in self.model.transfers.items()
            if account_id in (t.row["debit_account_id"], t.row["credit_account_id"])
        }
        assert sorted(t["id"] for t in listed) == sorted(expected), (account_id, listed)
        stamps = [t["timestamp"] for t in listed]
        assert stamps == sorted(stamps, reverse=True), "newest first"
        for t in listed:
            self.check_transfer(t["id"], t, read=True)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        ApiMachine.steps += 1
        totals: dict[str, list[int]] = {}
        for account_id in self.account_ids:
            r = self.get(f"/v1/accounts/{account_id}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert without_timestamp(body) == self.expected_account(account_id), (
                account_id, body, self.expected_account(account_id),
            )  # fmt: skip
            t = totals.setdefault(body["currency"], [0, 0, 0, 0])
            for i, k in enumerate(
                ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
            ):
                t[i] += body[k]
        for currency, (dp, cp, dpend, cpend) in totals.items():
            assert dp == cp and dpend == cpend, (currency, dp, cp, dpend, cpend)

    def teardown(self) -> None:
        """The journal (PostgreSQL) sums to the same balances as the model."""
        journal = journal_balances(self.node.database_url)  # type: ignore[attr-defined]
        for account_id in self.account_ids:
            a = self.model.accounts[account_id]
            got = tuple(int(v) for v in journal.get(account_id, (0, 0, 0, 0)))
            assert got == (a.dp, a.cp, a.dpend, a.cpend), (account_id, got)


def test_http_api_matches_reference_model(make_node) -> None:
    node = make_node(shards=SHARDS)
    ApiMachine.node = node
    ApiMachine.steps = ApiMachine.requests = 0
    first = next(ApiMachine.examples)
    try:
        run_state_machine_as_test(ApiMachine, settings=MODEL_SETTINGS)
    finally:
        ApiMachine.node = None
    examples = next(ApiMachine.examples) - first - 1
    print(
        f"api model: {examples} examples, {ApiMachine.steps} checked steps, "
        f"{ApiMachine.requests} requests"
    )


# ---------------------------------------------------------------------------
# Bugs the machine found, fixed: minimal reproductions
# ---------------------------------------------------------------------------


def account_on(node, shard: int, name: str, flags: tuple[str, ...] = ()) -> str:
    """Open a USD account whose id lives on ``shard`` (of 2)."""
    ids = (f"{name}{i}" for i in itertools.count())
    account_id = next(a for a in ids if shard_key(a) % 2 == shard)
    body = {"id": account_id, "currency": "USD", "flags": list(flags)}
    r = node.http.post("/v1/accounts", json=body)
    assert r.status_code == 201, r.text
    return account_id


def reused_id_with_another_shards_debit(node) -> tuple[int, str]:
    """The same transfer id again with a debit account on another shard, which would refuse it
    if it were new. README: 409 exists_with_different_fields. It was 422 insufficient_funds
    (that shard does not know the id; with a funded debit account the journal's unique key
    caught it and the answer was 409). Nothing moves either way."""
    payer, payee = account_on(node, 0, "payer"), account_on(node, 0, "payee")
    empty = account_on(node, 1, "empty", (NO_OVERDRAFT,))
    first = {"id": "t1", "debit_account_id": payer, "credit_account_id": payee, "amount": 57,
             "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=first).status_code == 201
    r = node.http.post("/v1/transfers", json=first | {"debit_account_id": empty})
    return r.status_code, r.json()["code"]


def post_with_swapped_accounts_across_shards(node) -> tuple[int, str]:
    """A post naming the pending's accounts the wrong way round. With both accounts on one
    shard: 422 pending_account_mismatch. Across shards it was 422 pending_not_found (routed to the
    shard of the named debit account, which holds no such pending; likewise a post naming a
    posted transfer answered pending_not_found, not pending_transfer_not_pending)."""
    payer, payee = account_on(node, 0, "hpayer"), account_on(node, 1, "hpayee")
    hold = {"id": "p1", "debit_account_id": payer, "credit_account_id": payee, "amount": 10,
            "currency": "USD", "flags": ["pending"]}  # fmt: skip
    assert node.http.post("/v1/transfers", json=hold).status_code == 201
    post = {"id": "r1", "pending_id": "p1", "flags": ["post_pending"],
            "debit_account_id": payee, "credit_account_id": payer, "currency": "USD"}  # fmt: skip
    r = node.http.post("/v1/transfers", json=post)
    return r.status_code, r.json()["code"]


def test_cross_shard_refusals_get_the_documented_codes(make_node) -> None:
    node = make_node(shards=2)
    got = {
        "reused id, debit on another shard": reused_id_with_another_shards_debit(node),
        "post with swapped accounts across shards": post_with_swapped_accounts_across_shards(node),
    }
    wanted = {
        "reused id, debit on another shard": (409, "exists_with_different_fields"),
        "post with swapped accounts across shards": (422, "pending_account_mismatch"),
    }
    assert got == wanted
