"""FX arithmetic (domain/rails/fx.py): exact integers, rounding in the node's favour."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynode.domain.rails import fx


def test_rates_parse_exactly_and_print_back() -> None:
    assert fx.parse_rate("1.0845") == 1_084_500_000
    assert fx.parse_rate("150") == 150 * fx.SCALE
    assert fx.format_rate(1_084_500_000) == "1.0845" and fx.format_rate(fx.SCALE * 3) == "3"
    for bad in ("1e3", "-1", "0", "1.0000000001", "", "1,5", " 1.2"):
        with pytest.raises(fx.FxError):
            fx.parse_rate(bad)


def test_exponents_follow_iso_4217() -> None:
    # 100.00 EUR at 1.0845 USD per EUR: 108.45 USD; to JPY (0 decimals) and KWD (3).
    assert fx.buy_amount(10_000, "EUR", "USD", fx.parse_rate("1.0845")) == 10_845
    assert fx.buy_amount(10_000, "USD", "JPY", fx.parse_rate("151.37")) == 15_137
    assert fx.buy_amount(10_000, "USD", "KWD", fx.parse_rate("0.30712")) == 30_712
    assert fx.sell_amount(10_845, "EUR", "USD", fx.parse_rate("1.0845")) == 10_000
    with pytest.raises(fx.FxError):
        fx.exponent("XYZ")
    assert fx.customer_rate(fx.SCALE, 50) == 995_000_000


@given(
    amount=st.integers(1, 10**15),
    rate=st.integers(1_000, 10**12),
    pair=st.sampled_from([("EUR", "USD"), ("USD", "JPY"), ("JPY", "KWD"), ("KWD", "EUR")]),
)
def test_rounding_never_favours_the_customer(amount: int, rate: int, pair: tuple) -> None:
    sell_ccy, buy_ccy = pair
    got = fx.buy_amount(amount, sell_ccy, buy_ccy, rate)
    # Exact value: amount * rate / 10**9 scaled by exponents; got <= exact < got + 1.
    lhs = got * fx.SCALE * 10 ** fx.exponent(sell_ccy)
    exact = amount * rate * 10 ** fx.exponent(buy_ccy)
    assert lhs <= exact < lhs + fx.SCALE * 10 ** fx.exponent(sell_ccy)
    cost = fx.sell_amount(got, sell_ccy, buy_ccy, rate)
    assert cost <= amount  # buying what selling gave never costs more than was sold
    if got:
        assert fx.buy_amount(cost, sell_ccy, buy_ccy, rate) >= got
