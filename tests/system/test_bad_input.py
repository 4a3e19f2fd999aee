"""Malformed and refused requests against a real node: a table, one node start.

Every row is sent over real HTTP to real Ray shards and PostgreSQL and must be
refused with ``application/problem+json`` carrying the documented ``code``,
without echoing the offending value, without a 500, and without touching the
journal or the in-memory balances (checked once, after the whole table).

Rows tagged ``bug=`` reproduce a known product bug: they are reported as
xfailed subtests while the bug is there, and fail once it is fixed so that the
tag gets removed.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from paynode.storage.database import libpq_url

PROBLEM_JSON = "application/problem+json"
SECRET = "sk_live_51HqLyjWDarjtT1zdp7dcXq"
USD = "USD"

_DROP = object()  # tr(field=_DROP) removes the field from the body
_ids = count(1)


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    status: int
    code: str
    body: bytes | None = None  # raw bytes, exactly as sent
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    leak: tuple[str, ...] = ()  # must not appear anywhere in the response
    problem_field: str | None = None  # expected ``field`` of the problem, if any
    chunked: bool = False  # send the body without Content-Length
    raw_content_length: str | None = None  # lie about Content-Length (sent via http.client)
    batch_item: bool = False  # batch answered 200 with per-transfer codes (comma-joined)
    bug: str | None = None  # a known product bug this row reproduces


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    text: str


def enc(value: object) -> bytes:
    return json.dumps(value).encode()


def _changed(body: dict, changes: dict[str, object]) -> dict:
    """``body`` with ``changes`` applied; a value of _DROP removes the field."""
    for k, v in changes.items():
        if v is _DROP:
            body.pop(k, None)
        else:
            body[k] = v
    return body


def tr(**changes: object) -> dict:
    """A valid plain transfer alice -> bob with ``changes`` applied."""
    return _changed(
        {
            "id": f"bad-{next(_ids)}",
            "debit_account_id": "alice",
            "credit_account_id": "bob",
            "amount": 10,
            "currency": USD,
        },
        changes,
    )


def acct(**changes: object) -> dict:
    return _changed({"id": f"new-{next(_ids)}", "currency": USD}, changes)


def cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- the table ----------------------------------------------------------------
#
# Transfer bodies are checked on POST /v1/transfers and, wrapped, on
# POST /v1/transfers/batch. Decode errors refuse a whole batch with a problem;
# ledger-level refusals (``item=True``) answer a batch 200 with the code per
# transfer, and a single transfer with the problem.

# Product bugs this table found, all fixed; rows keep their ``bug`` slot so a
# new known bug can be tagged the same way.
ENUM_ECHO = KEY_ECHO = NUL_500 = CURSOR_NUL_500 = CURSOR_BIGINT_500 = UTF8_500 = None

S = SECRET.encode()
# Bodies that are not JSON, one form per endpoint: (name, transfer, batch, account, leak, bug)
MALFORMED_CASES: list[tuple] = [
    ("truncated json",
     b'{"id": "bad-t", "amount": 10, "metadata": {"note": "' + S,
     b'{"transfers": [{"id": "bad-t", "amount": 10, "metadata": {"note": "' + S,
     b'{"id": "new-t", "metadata": {"note": "' + S, (SECRET,), None),
    ("truncated after a key", b'{"id"', b'{"transfers": [{"id"', b'{"id"', (), None),
    ("not json at all", b"id=bad-t&amount=10&token=" + S, b"transfers=" + S,
     b"<account id='" + S + b"'/>", (SECRET,), None),
    ("empty body", b"", b"", b"", (), None),
    ("whitespace body", b"  \n ", b"  \n ", b"  \n ", (), None),
    ("trailing garbage", enc(tr()) + b" " + S, enc({"transfers": [tr()]}) + b" " + S,
     enc(acct()) + b" " + S, (SECRET,), None),
    ("two objects", enc(tr()) + enc(tr()), enc({"transfers": [tr()]}) * 2, enc(acct()) * 2,
     (), None),
    ("single quotes", b"{'id': 'bad-t'}", b"{'transfers': []}", b"{'id': 'new-t'}", (), None),
    ("utf-8 BOM", b"\xef\xbb\xbf" + enc(tr()), b"\xef\xbb\xbf" + enc({"transfers": [tr()]}),
     b"\xef\xbb\xbf" + enc(acct()), (), None),
    ("invalid utf-8 outside strings", b"\xff\xfe{}", b"\xff\xfe{}", b"\xff\xfe{}", (), None),
    ("NaN amount", b'{"id": "bad-t", "amount": NaN}',
     b'{"transfers": [{"id": "bad-t", "amount": NaN}]}', b'{"id": "new-t", "currency": NaN}',
     (), None),
    ("lone surrogate", b'{"id": "bad-t", "metadata": {"k": "\\ud800"}}',
     b'{"transfers": [{"id": "bad-t", "metadata": {"k": "\\ud800"}}]}',
     b'{"id": "new-t", "metadata": {"k": "\\ud800"}}', (), None),
    ("invalid utf-8 in a string", b'{"id": "bad-t", "metadata": {"k": "\xff\xfe"}}',
     b'{"transfers": [{"id": "bad-t", "metadata": {"k": "\xff\xfe"}}]}',
     b'{"id": "new-t", "metadata": {"k": "\xff\xfe"}}', (), UTF8_500),
    ("invalid utf-8 in a key", b'{"id": "bad-t", "metadata": {"\xff": "v"}}',
     b'{"transfers": [{"id": "bad-t", "metadata": {"\xff": "v"}}]}',
     b'{"id": "new-t", "metadata": {"\xff": "v"}}', (), UTF8_500),
]  # fmt: skip

# Transfer bodies: (name, body, status, code, leak, item, bug)
TRANSFER_CASES: list[tuple] = [
    # JSON, wrong shape
    ("array instead of object", [tr()], 422, "invalid_field", (), False, None),
    ("string instead of object", SECRET, 422, "invalid_field", (SECRET,), False, None),
    ("null instead of object", None, 422, "invalid_field", (), False, None),
    ("number instead of object", 42, 422, "invalid_field", (), False, None),
    ("unknown field (secret value)", tr(memo=SECRET), 422, "unknown_field", (SECRET,), False,
     None),
    ("unknown field (secret name)", tr(**{SECRET: "x"}), 422, "unknown_field", (SECRET,), False,
     KEY_ECHO),
    ("missing id", tr(id=_DROP), 422, "missing_field", (), False, None),
    ("null id", tr(id=None), 422, "invalid_field", (), False, None),
    # amount
    ("amount 1.5", tr(amount=1.5), 422, "invalid_field", ("1.5",), False, None),
    ("amount 1.0", tr(amount=1.0), 422, "invalid_field", ("1.0",), False, None),
    ("amount '10'", tr(amount="10"), 422, "invalid_field", (), False, None),
    ("amount secret string", tr(amount=SECRET), 422, "invalid_field", (SECRET,), False, None),
    ("amount true", tr(amount=True), 422, "invalid_field", (), False, None),
    ("amount false", tr(amount=False), 422, "invalid_field", (), False, None),
    ("amount 0", tr(amount=0), 422, "invalid_field", (), False, None),
    ("amount negative", tr(amount=-987654321), 422, "invalid_field", ("987654321",), False,
     None),
    ("amount 2**63", tr(amount=2**63), 422, "invalid_field", (str(2**63),), False, None),
    ("amount 2**64", tr(amount=2**64), 422, "invalid_field", (str(2**64),), False, None),
    ("amount 10**30", tr(amount=10**30), 422, "invalid_field", (str(10**30),), False, None),
    ("amount object", tr(amount={"v": SECRET}), 422, "invalid_field", (SECRET,), False, None),
    # ids
    ("id 65 chars", tr(id=(SECRET * 3)[:65]), 422, "invalid_field", ((SECRET * 3)[:65],),
     False, None),
    ("id empty", tr(id=""), 422, "invalid_field", (), False, None),
    ("id 'a b'", tr(id="a b"), 422, "invalid_field", ("a b",), False, None),
    ("id 'é'", tr(id="é"), 422, "invalid_field", ("é", "\\u00e9"), False, None),
    ("id 'a/b'", tr(id="a/b"), 422, "invalid_field", ("a/b",), False, None),
    ("id with secret and space", tr(id=SECRET + " x"), 422, "invalid_field", (SECRET,), False,
     None),
    ("id number", tr(id=12345), 422, "invalid_field", (), False, None),
    ("debit id bad chars", tr(debit_account_id=SECRET + "/x"), 422, "invalid_field",
     (SECRET,), False, None),
    ("pending_id bad chars", tr(pending_id=SECRET + " x", flags=["post_pending"]), 422,
     "invalid_field", (SECRET,), False, None),
    # currency
    ("currency 'usd'", tr(currency="usd"), 422, "invalid_field", (), False, None),
    ("currency 'US'", tr(currency="US"), 422, "invalid_field", (), False, None),
    ("currency 'USDX'", tr(currency="USDX"), 422, "invalid_field", ("USDX",), False, None),
    ("currency empty", tr(currency=""), 422, "invalid_field", (), False, None),
    ("currency secret", tr(currency=SECRET), 422, "invalid_field", (SECRET,), False, None),
    ("currency number", tr(currency=840), 422, "invalid_field", (), False, None),
    # flags
    ("unknown flag", tr(flags=["refund_now"]), 422, "invalid_field", ("refund_now",), False,
     ENUM_ECHO),
    ("unknown flag (secret)", tr(flags=[SECRET]), 422, "invalid_field", (SECRET,), False,
     ENUM_ECHO),
    ("flags not a list", tr(flags="pending"), 422, "invalid_field", (), False, None),
    ("flags too many", tr(flags=["linked"] * 5), 422, "invalid_field", (), False, None),
    ("flags pending+post_pending", tr(flags=["pending", "post_pending"], pending_id="p-1"),
     422, "flags_are_mutually_exclusive", (), True, None),
    ("flags post_pending+void_pending", tr(flags=["post_pending", "void_pending"],
     pending_id="p-1"), 422, "flags_are_mutually_exclusive", (), True, None),
    ("post_pending without pending_id", tr(flags=["post_pending"]), 422,
     "pending_id_required", (), True, None),
    ("void_pending without pending_id", tr(flags=["void_pending"]), 422,
     "pending_id_required", (), True, None),
    ("pending_id on a plain transfer", tr(pending_id="seed"), 422, "pending_id_must_be_empty",
     (), True, None),
    ("pending_id on a pending transfer", tr(pending_id="seed", flags=["pending"]), 422,
     "pending_id_must_be_empty", (), True, None),
    ("pending_id equal to id", tr(id="self-ref", pending_id="self-ref",
     flags=["void_pending"]), 422, "pending_id_must_be_different", (), True, None),
    # timeout
    ("timeout_s on a plain transfer", tr(timeout_s=30), 422,
     "timeout_reserved_for_pending_transfer", (), True, None),
    ("timeout_s 0 on a pending", tr(timeout_s=0, flags=["pending"]), 422, "invalid_field", (),
     False, None),
    ("timeout_s 2**31 on a pending", tr(timeout_s=2**31, flags=["pending"]), 422,
     "invalid_field", (str(2**31),), False, None),
    ("timeout_s float", tr(timeout_s=1.5, flags=["pending"]), 422, "invalid_field", (), False,
     None),
    # missing parts of a plain transfer
    ("missing amount", tr(amount=_DROP), 422, "missing_field", (), True, None),
    ("null amount", tr(amount=None), 422, "missing_field", (), True, None),
    ("missing currency", tr(currency=_DROP), 422, "missing_field", (), True, None),
    ("missing debit account", tr(debit_account_id=_DROP), 422, "missing_field", (), True, None),
    ("missing credit account", tr(credit_account_id=_DROP), 422, "missing_field", (), True,
     None),
    # metadata
    ("metadata int value", tr(metadata={"k": 1}), 422, "invalid_field", (), False, None),
    ("metadata nested value", tr(metadata={"k": {"x": SECRET}}), 422, "invalid_field",
     (SECRET,), False, None),
    ("metadata null value", tr(metadata={"k": None}), 422, "invalid_field", (), False, None),
    ("metadata 33 keys", tr(metadata={f"k{i}": "v" for i in range(33)}), 422, "invalid_field",
     (), False, None),
    ("metadata empty key", tr(metadata={"": "v"}), 422, "invalid_field", (), False, None),
    ("metadata key too long", tr(metadata={"k" * 65: "v"}), 422, "invalid_field", ("k" * 65,),
     False, None),
    ("metadata value too long", tr(metadata={"k": (SECRET * 20)[:513]}), 422, "invalid_field",
     (SECRET,), False, None),
    ("metadata is a list", tr(metadata=[SECRET]), 422, "invalid_field", (SECRET,), False, None),
    # refused by the ledger (state needed)
    ("same debit and credit account", tr(credit_account_id="alice"), 422, "same_account", (),
     True, None),
    ("unknown debit account", tr(debit_account_id="ghost"), 422, "account_not_found", (),
     True, None),
    ("unknown credit account", tr(credit_account_id="ghost"), 422, "account_not_found", (),
     True, None),
    ("currency differs from accounts'", tr(currency="EUR"), 422, "currency_mismatch", (),
     True, None),
    ("accounts in different currencies", tr(credit_account_id="eve"), 422,
     "currency_mismatch", (), True, None),
    ("post_pending of a posted transfer", {"id": "bad-post", "pending_id": "seed",
     "flags": ["post_pending"]}, 422, "pending_transfer_not_pending", (), True, None),
    ("void_pending of an unknown transfer", {"id": "bad-void", "pending_id": "ghost",
     "flags": ["void_pending"]}, 422, "pending_not_found", (), True, None),
    ("insufficient funds on a capped account", tr(debit_account_id="capped"), 422,
     "insufficient_funds", (), True, None),
    ("linked chain left open", tr(flags=["linked"]), 422, "linked_event_chain_open", (), True,
     None),
    ("replay of seed with a different amount", tr(id="seed", amount=11), 409,
     "exists_with_different_fields", (), True, None),
]  # fmt: skip

ACCOUNT_CASES: list[tuple] = [
    # (name, body, status, code, leak, bug)
    ("array instead of object", [acct()], 422, "invalid_field", (), None),
    ("string instead of object", SECRET, 422, "invalid_field", (SECRET,), None),
    ("unknown field", acct(owner=SECRET), 422, "unknown_field", (SECRET,), None),
    ("missing id", acct(id=_DROP), 422, "missing_field", (), None),
    ("missing currency", acct(currency=_DROP), 422, "missing_field", (), None),
    ("id 65 chars", acct(id=(SECRET * 3)[:65]), 422, "invalid_field", ((SECRET * 3)[:65],),
     None),
    ("id empty", acct(id=""), 422, "invalid_field", (), None),
    ("id 'a b'", acct(id="a b"), 422, "invalid_field", ("a b",), None),
    ("id 'é'", acct(id="é"), 422, "invalid_field", ("é", "\\u00e9"), None),
    ("id 'a/b'", acct(id="a/b"), 422, "invalid_field", ("a/b",), None),
    ("currency 'usd'", acct(currency="usd"), 422, "invalid_field", (), None),
    ("currency 'US'", acct(currency="US"), 422, "invalid_field", (), None),
    ("currency 'USDX'", acct(currency="USDX"), 422, "invalid_field", ("USDX",), None),
    ("currency secret", acct(currency=SECRET), 422, "invalid_field", (SECRET,), None),
    ("unknown flag", acct(flags=["overdraft_ok"]), 422, "invalid_field", ("overdraft_ok",),
     ENUM_ECHO),
    ("both limit flags", acct(flags=["debits_must_not_exceed_credits",
     "credits_must_not_exceed_debits"]), 422, "flags_are_mutually_exclusive", (), None),
    ("three flags", acct(flags=["debits_must_not_exceed_credits"] * 3), 422, "invalid_field",
     (), None),
    ("metadata int value", acct(metadata={"k": 1}), 422, "invalid_field", (), None),
    ("metadata nested secret", acct(metadata={"k": [SECRET]}), 422, "invalid_field",
     (SECRET,), None),
    ("metadata 33 keys", acct(metadata={f"k{i}": "v" for i in range(33)}), 422,
     "invalid_field", (), None),
    ("metadata value too long", acct(metadata={"k": (SECRET * 20)[:513]}), 422,
     "invalid_field", (SECRET,), None),
    ("existing id, other currency", {"id": "alice", "currency": "EUR"}, 409,
     "exists_with_different_fields", (), None),
]  # fmt: skip


def build_rows(limit: int) -> list[Row]:
    rows: list[Row] = []
    post = {"Content-Type": "application/json"}
    for name, transfer, batch, account, leak, bug in MALFORMED_CASES:
        for path, raw in (
            ("/v1/transfers", transfer),
            ("/v1/transfers/batch", batch),
            ("/v1/accounts", account),
        ):
            rows.append(Row(f"{path}: {name}", "POST", path, 400, "malformed_json", raw,
                            headers=post, leak=leak, bug=bug))  # fmt: skip
    for name, body, status, code, leak, item, bug in TRANSFER_CASES:
        rows.append(
            Row(f"transfer: {name}", "POST", "/v1/transfers", status, code, enc(body),
                headers=post, leak=leak, bug=bug)
        )  # fmt: skip
        if not isinstance(body, dict):
            continue  # a batch that is not an object: see the batch-shape rows below
        batch = enc({"transfers": [body]})
        if item:
            rows.append(
                Row(f"batch: {name}", "POST", "/v1/transfers/batch", 200, code, batch,
                    headers=post, leak=leak, batch_item=True, bug=bug)
            )  # fmt: skip
        else:
            rows.append(
                Row(f"batch: {name}", "POST", "/v1/transfers/batch", status, code, batch,
                    headers=post, leak=leak, bug=bug)
            )  # fmt: skip
    for name, body, status, code, leak, bug in ACCOUNT_CASES:
        rows.append(
            Row(f"account: {name}", "POST", "/v1/accounts", status, code, enc(body),
                headers=post, leak=leak, bug=bug)
        )  # fmt: skip

    def batch_of(n: int) -> bytes:
        return enc({"transfers": [tr() for _ in range(n)]})

    rows += [
        Row("batch: zero transfers", "POST", "/v1/transfers/batch", 422, "invalid_field",
            enc({"transfers": []}), headers=post, problem_field="$.transfers"),
        Row("batch: 8191 transfers", "POST", "/v1/transfers/batch", 422, "invalid_field",
            batch_of(8191), headers=post, problem_field="$.transfers"),
        Row("batch: array instead of object", "POST", "/v1/transfers/batch", 422,
            "invalid_field", enc([tr()]), headers=post),
        Row("batch: string instead of object", "POST", "/v1/transfers/batch", 422,
            "invalid_field", enc(SECRET), headers=post, leak=(SECRET,)),
        Row("batch: missing transfers", "POST", "/v1/transfers/batch", 422, "missing_field",
            enc({}), headers=post),
        Row("batch: transfers null", "POST", "/v1/transfers/batch", 422, "invalid_field",
            enc({"transfers": None}), headers=post),
        Row("batch: transfers is an object", "POST", "/v1/transfers/batch", 422,
            "invalid_field", enc({"transfers": tr()}), headers=post),
        Row("batch: unknown top-level field", "POST", "/v1/transfers/batch", 422,
            "unknown_field", enc({"transfers": [tr()], "note": SECRET}), headers=post,
            leak=(SECRET,)),
        # one bad transfer refuses the whole batch: the valid first one is not applied
        Row("batch: valid transfer then a bad amount", "POST", "/v1/transfers/batch", 422,
            "invalid_field", enc({"transfers": [tr(), tr(amount=1.5)]}), headers=post,
            problem_field="$.transfers[1].amount"),
        Row("transfer: amount field path", "POST", "/v1/transfers", 422, "invalid_field",
            enc(tr(amount=-1)), headers=post, problem_field="$.amount"),
    ]  # fmt: skip

    # a linked chain whose second transfer is refused: neither is applied
    chain = [tr(flags=["linked"]), tr(credit_account_id="alice")]
    rows.append(
        Row("batch: linked chain with a bad second transfer", "POST", "/v1/transfers/batch",
            200, "linked_event_failed,same_account", enc({"transfers": chain}), headers=post,
            batch_item=True)
    )  # fmt: skip

    # bodies over the limit: declared, streamed without a length, and a lie about the length
    big = b'{"id": "' + b"x" * (limit + 1024) + b'"}'
    for path in ("/v1/transfers", "/v1/accounts", "/v1/transfers/batch"):
        rows.append(Row(f"{path}: body over the limit", "POST", path, 413, "body_too_large",
                        big, headers=post))  # fmt: skip
        rows.append(Row(f"{path}: chunked body over the limit", "POST", path, 413,
                        "body_too_large", big, headers=post, chunked=True))  # fmt: skip
    rows.append(
        Row("transfer: declared Content-Length over the limit", "POST", "/v1/transfers", 413,
            "body_too_large", b"{}", headers=post, raw_content_length=str(limit + 1))
    )  # fmt: skip

    # reads, routing, query parameters
    long_id = "t" * 81
    rows += [
        Row("get: unknown transfer", "GET", "/v1/transfers/nope", 404, "transfer_not_found"),
        Row("get: unknown transfer, secret id", "GET", f"/v1/transfers/{SECRET}", 404,
            "transfer_not_found", leak=(SECRET,)),
        Row("get: transfer id too long for a path", "GET", f"/v1/transfers/{long_id}", 404,
            "transfer_not_found", leak=(long_id,)),
        Row("get: GET /v1/transfers/batch is a lookup", "GET", "/v1/transfers/batch", 404,
            "transfer_not_found"),
        Row("get: unknown account", "GET", "/v1/accounts/nope", 404, "account_not_found"),
        Row("get: account id with NUL", "GET", "/v1/accounts/a%00b", 404, "account_not_found"),
        Row("get: unknown route", "GET", "/nope", 404, "not_found"),
        Row("get: unknown versioned route", "GET", "/v2/transfers", 404, "not_found"),
        Row("delete: /v1/transfers", "DELETE", "/v1/transfers", 405, "method_not_allowed"),
        Row("get: /v1/transfers", "GET", "/v1/transfers", 405, "method_not_allowed"),
        Row("put: /v1/accounts", "PUT", "/v1/accounts", 405, "method_not_allowed",
            enc(acct()), headers=post),
        Row("delete: an account", "DELETE", "/v1/accounts/alice", 405, "method_not_allowed"),
        Row("patch: a transfer", "PATCH", "/v1/transfers/seed", 405, "method_not_allowed",
            enc({"amount": 1}), headers=post),
        Row("list: limit=0", "GET", "/v1/accounts/x/transfers", 422, "invalid_field",
            params={"limit": "0"}, problem_field="query.limit"),
        Row("list: limit=5000", "GET", "/v1/accounts/x/transfers", 422, "invalid_field",
            params={"limit": "5000"}, problem_field="query.limit"),
        Row("list: limit=-1", "GET", "/v1/accounts/alice/transfers", 422, "invalid_field",
            params={"limit": "-1"}),
        Row("list: limit not a number", "GET", "/v1/accounts/alice/transfers", 422,
            "invalid_field", params={"limit": SECRET}, leak=(SECRET,)),
        Row("list: cursor over 200 chars", "GET", "/v1/accounts/alice/transfers", 422,
            "invalid_field", params={"cursor": "A" * 201}, problem_field="query.cursor"),
        Row("list: cursor not base64", "GET", "/v1/accounts/alice/transfers", 400,
            "invalid_cursor", params={"cursor": "!!"}),
        Row("list: cursor empty", "GET", "/v1/accounts/alice/transfers", 400,
            "invalid_cursor", params={"cursor": ""}),
        Row("list: cursor without a colon", "GET", "/v1/accounts/alice/transfers", 400,
            "invalid_cursor", params={"cursor": cursor(SECRET.encode())}, leak=(SECRET,)),
        Row("list: cursor with a non-integer ts", "GET", "/v1/accounts/alice/transfers", 400,
            "invalid_cursor", params={"cursor": cursor(b"soon:seed")}),
        Row("list: cursor not utf-8", "GET", "/v1/accounts/alice/transfers", 400,
            "invalid_cursor", params={"cursor": cursor(b"\xff\xfe:\xff")}),
        Row("list: cursor on an unknown account", "GET", "/v1/accounts/ghost/transfers", 404,
            "account_not_found", params={"cursor": "!!"}),
        Row("list: cursor with NUL in the id", "GET", "/v1/accounts/alice/transfers", 400,
            "invalid_cursor", params={"cursor": cursor(b"1:a\x00b")}, bug=CURSOR_NUL_500),
        Row("list: cursor ts beyond bigint", "GET", "/v1/accounts/alice/transfers", 400,
            "invalid_cursor", params={"cursor": cursor(b"99999999999999999999999:x")},
            bug=CURSOR_BIGINT_500),
        Row("get: transfer id with NUL", "GET", "/v1/transfers/a%00b", 404,
            "transfer_not_found", bug=NUL_500),
        Row("list: account id with NUL", "GET", "/v1/accounts/a%00b/transfers", 404,
            "account_not_found", bug=NUL_500),
    ]  # fmt: skip
    return rows


# -- sending and checking -------------------------------------------------------


def send(client: httpx.Client, base_url: str, row: Row) -> Reply:
    if row.raw_content_length is not None:
        parts = urlsplit(base_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.putrequest(row.method, row.path)
            for k, v in {**client.headers, **row.headers}.items():
                conn.putheader(k, v)
            conn.putheader("Content-Length", row.raw_content_length)
            conn.putheader("Connection", "close")
            conn.endheaders(row.body or b"")
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
        finally:
            conn.close()
    content: bytes | Iterator[bytes] | None = row.body
    if row.chunked and row.body is not None:
        data = row.body
        content = (data[i : i + 65536] for i in range(0, len(data), 65536))
    r = client.request(row.method, row.path, content=content, params=row.params,
                       headers=row.headers)  # fmt: skip
    return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text)


def check(row: Row, reply: Reply) -> None:
    where = f"{row.method} {row.path} -> {reply.status} {reply.text[:300]}"
    for secret in row.leak:
        assert secret not in reply.text, f"response echoes {secret[:40]!r}: {where}"
        assert secret not in str(reply.headers), f"headers echo {secret[:40]!r}: {where}"
    assert reply.status == row.status, where
    if row.batch_item:
        assert reply.headers.get("content-type", "").startswith("application/json"), where
        results = json.loads(reply.text)["results"]
        assert [r.get("code") for r in results] == row.code.split(","), where
        assert all("status" not in r for r in results), where
        return
    assert reply.headers.get("content-type", "").startswith(PROBLEM_JSON), where
    problem = json.loads(reply.text)
    assert isinstance(problem, dict), where
    assert problem.get("code") == row.code, where
    assert problem.get("status") == reply.status, where
    assert problem.get("type") == f"https://paynode.dev/problems/{row.code}", where
    for key in ("title", "detail"):
        assert isinstance(problem.get(key), str) and problem[key], f"{key}: {where}"
    assert problem.get("retryable", False) is False, where
    assert set(problem) <= {"type", "title", "status", "detail", "code", "field", "retryable"}
    if row.problem_field is not None:
        assert problem.get("field") == row.problem_field, where


def db_snapshot(database_url: str) -> dict[str, object]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        snap: dict[str, object] = {}
        for table in ("accounts", "transfers"):
            snap[f"{table}.count"] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            snap[f"{table}.rows"] = [tuple(map(str, r)) for r in rows]
        return snap


def _setup(node) -> None:
    """Accounts the ledger-level rows need, and one posted transfer to refer to."""
    for body in (
        {"id": "alice", "currency": USD},
        {"id": "bob", "currency": USD},
        {"id": "eve", "currency": "EUR"},
        {"id": "capped", "currency": USD, "flags": ["debits_must_not_exceed_credits"]},
    ):
        r = node.http.post("/v1/accounts", json=body)
        assert r.status_code == 201, r.text
    seed = {"id": "seed", "debit_account_id": "alice", "credit_account_id": "bob",
            "amount": 100, "currency": USD}  # fmt: skip
    r = node.http.post("/v1/transfers", json=seed)
    assert r.status_code == 201, r.text


def test_bad_input_is_refused_without_side_effects(node, subtests) -> None:
    _setup(node)
    rows = build_rows(node.settings.http.max_body_bytes)
    assert len({r.name for r in rows}) == len(rows), "row names must be unique"
    db_before = db_snapshot(node.database_url)
    mem_before = node.balances()
    # The 4 set up here and the rails' 4 operator accounts (created at every start: ACH
    # clearing and micro-deposits, RTP clearing and fees).
    assert db_before["accounts.count"] == (8,) and db_before["transfers.count"] == (1,)

    # A fresh connection per request: an unhandled error makes the server drop the
    # connection, which must not turn the next row into a client-side ReadError.
    client = httpx.Client(
        base_url=node.url,
        timeout=60,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"Authorization": node.http.headers["Authorization"]},
    )
    statuses: dict[str, int] = {}
    with client:
        for row in rows:
            with subtests.test(msg=row.name):
                reply = send(client, node.url, row)
                statuses[row.name] = reply.status
                try:
                    check(row, reply)
                except AssertionError as e:
                    if row.bug:
                        pytest.xfail(f"known product bug ({row.bug}): {str(e).splitlines()[0]}")
                    raise
                if row.bug:
                    pytest.fail(f"{row.name!r} passes now: drop its bug= tag ({row.bug})")

    errors = {n: s for n, s in statuses.items() if s >= 500}
    known = {r.name for r in rows if r.bug}
    assert set(errors) <= known, f"5xx on rows without a known bug: {errors}"
    assert len(statuses) == len(rows)
    assert db_snapshot(node.database_url) == db_before, "a refused request changed the journal"
    assert node.balances() == mem_before, "a refused request changed in-memory balances"
