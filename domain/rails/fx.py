"""Foreign exchange: ISO 4217 minor units, rates as exact integers, quotes' amounts.

Pure, and integer only: a rate is ``rate_e9`` (the price of one unit of the base
currency in the quote currency, times 10**9), amounts are minor units, and a
conversion rounds in the node's favour (the customer receives the floor, pays
the ceiling). The customer's rate is the mid rate less ``spread_bps``; what the
spread keeps is the node's FX revenue.
"""

from __future__ import annotations

import re

# ISO 4217 minor-unit exponents (the currencies a wallet is likely to hold).
EXPONENTS: dict[str, int] = {
    "AED": 2, "ARS": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0,
    "CNY": 2, "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2,
    "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KES": 2,
    "KRW": 0, "KWD": 3, "MXN": 2, "MYR": 2, "NGN": 2, "NOK": 2, "NZD": 2, "OMR": 3,
    "PHP": 2, "PLN": 2, "RON": 2, "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TND": 3,
    "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "VND": 0, "ZAR": 2,
}  # fmt: skip
SCALE = 10**9  # rate_e9 = rate * SCALE
MAX_RATE_E9 = 10**18  # a rate below 10**9 per unit
MAX_SPREAD_BPS = 1000
_RATE = re.compile(r"(\d{1,9})(?:\.(\d{1,9}))?\Z")


class FxError(ValueError):
    """``code`` is the API's problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def exponent(currency: str) -> int:
    found = EXPONENTS.get(currency)
    if found is None:
        raise FxError("currency_not_supported", f"{currency} is not an FX currency here")
    return found


def parse_rate(text: str) -> int:
    """A decimal rate ("1.0845") as rate_e9, exactly; no floats, no exponent notation."""
    m = _RATE.match(text)
    if m is None:
        raise FxError("invalid_field", "a rate is digits with at most 9 decimals")
    whole, frac = m.group(1), (m.group(2) or "")
    rate = int(whole) * SCALE + int(frac.ljust(9, "0"))
    if not 0 < rate <= MAX_RATE_E9:
        raise FxError("invalid_field", "a rate is above 0")
    return rate


def format_rate(rate_e9: int) -> str:
    whole, frac = divmod(rate_e9, SCALE)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".")


def customer_rate(mid_e9: int, spread_bps: int) -> int:
    """The mid rate less the spread (the node's), never 0."""
    assert 0 <= spread_bps <= MAX_SPREAD_BPS
    return max(1, mid_e9 * (10_000 - spread_bps) // 10_000)


def buy_amount(sell: int, sell_ccy: str, buy_ccy: str, rate_e9: int) -> int:
    """What ``sell`` minor units of ``sell_ccy`` buy at ``rate_e9`` (buy per sell), floored."""
    num = sell * rate_e9 * 10 ** exponent(buy_ccy)
    return num // (SCALE * 10 ** exponent(sell_ccy))


def sell_amount(buy: int, sell_ccy: str, buy_ccy: str, rate_e9: int) -> int:
    """What buying ``buy`` minor units of ``buy_ccy`` costs in ``sell_ccy``, rounded up."""
    num = buy * SCALE * 10 ** exponent(sell_ccy)
    den = rate_e9 * 10 ** exponent(buy_ccy)
    return -(-num // den)


def value_in(amount: int, currency: str, target: str, rate_e9: int) -> int:
    """``amount`` of ``currency`` in minor units of ``target`` at ``rate_e9`` (target per
    currency), rounded up: what a limit counts must never be less than the value."""
    num = amount * rate_e9 * 10 ** exponent(target)
    return -(-num // (SCALE * 10 ** exponent(currency)))


def cross(base_quote_e9: int, inverse: bool) -> int:
    """A pair's rate the other way round (quote per base -> base per quote), floored."""
    return SCALE * SCALE // base_quote_e9 if inverse else base_quote_e9
