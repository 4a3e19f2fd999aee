"""The fast batch decoder answers exactly as msgspec does with the documented type.

``api/bulk_decode.BulkDecoder`` decodes with the patterns removed and checks them
afterwards, once per field over the whole batch; clients must not be able to tell:
the same values for good bodies, and a refusal for every bad one (the same message when
the body has one fault; with several, msgspec names the first in field order and the fast
decoder may name another of them).
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paynode.api.bulk_decode import BulkDecoder
from paynode.api.schemas import TransferBatchIn

FAST = BulkDecoder(TransferBatchIn)

# Ids and currencies near the patterns' edges: good ones, and ones a pattern refuses
# (spaces, lower case, a newline, which the joined check must not let through).
_ids = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9_.:-]{1,8}\Z"),
    st.sampled_from(["a b", "x\n", "\ny", "é", "", "a" * 65, "ok-1", "a:b.c_d"]),
)
_currencies = st.one_of(st.sampled_from(["USD", "EUR", "usd", "US", "USDX", "U\nS"]))
_transfer = st.fixed_dictionaries(
    {"id": _ids},
    optional={
        "debit_account_id": _ids,
        "credit_account_id": _ids,
        "amount": st.integers(min_value=-1, max_value=2**63),
        "currency": _currencies,
        "flags": st.lists(st.sampled_from(["pending", "linked", "nope"]), max_size=5),
        "pending_id": _ids,
    },
)
_batch = st.fixed_dictionaries({"transfers": st.lists(_transfer, min_size=0, max_size=6)})


def _answer(decode, raw: bytes) -> tuple[str, object]:
    try:
        value = decode(raw)
    except msgspec.ValidationError as e:
        return "error", str(e)
    return "ok", [
        (t.id, t.debit_account_id, t.credit_account_id, t.amount, t.currency, list(t.flags),
         t.pending_id)
        for t in value.transfers
    ]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_batch)
def test_the_fast_decoder_answers_as_msgspec_does(batch: dict) -> None:
    raw = msgspec.json.encode(batch)
    expected = _answer(lambda b: msgspec.json.decode(b, type=TransferBatchIn), raw)
    got = _answer(FAST.decode, raw)
    assert got[0] == expected[0], (got, expected)
    if got[0] == "ok":
        assert got == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "x"), ("debit_account_id", "acct-1"), ("currency", "USD"), ("pending_id", "p")],
)
def test_one_fault_gets_the_same_message(field: str, value: str) -> None:
    """A trailing newline is a fault for both decoders (Python's `$` alone would allow it)."""
    body = {"id": "t1", "debit_account_id": "a", "credit_account_id": "b", "amount": 1,
            "currency": "USD"}  # fmt: skip
    raw = msgspec.json.encode({"transfers": [body, body | {field: value + "\n"}]})
    expected = _answer(lambda b: msgspec.json.decode(b, type=TransferBatchIn), raw)
    assert expected[0] == "error"
    assert _answer(FAST.decode, raw) == expected


def test_a_bad_id_late_in_a_batch_is_named_by_its_position() -> None:
    good = {"id": "t0", "debit_account_id": "a", "credit_account_id": "b", "amount": 1,
            "currency": "USD"}  # fmt: skip
    raw = msgspec.json.encode({"transfers": [good] * 5 + [good | {"credit_account_id": "b c"}]})
    kind, message = _answer(FAST.decode, raw)
    assert kind == "error"
    assert "$.transfers[5].credit_account_id" in str(message)
