"""Money: exact parsing of USDT amounts and their plain-string form. Never a float."""
from __future__ import annotations

import re
from decimal import Decimal

MICRO = 10**6
MAX_MICRO = 10**20 - 1  # NUMERIC(20,6) holds 14 integer digits
_PLAIN = re.compile(r"^([0-9]+)(?:\.([0-9]+))?$")  # ASCII digits only


class AmountError(ValueError):
    """An amount is not a positive USDT value with at most 6 decimals."""


def parse_amount(value: object, *, zero_allowed: bool = False) -> Decimal:
    """Parse a JSON amount (string or number token text) exactly; raise AmountError. `zero_allowed`: 0 is an
    amount too (a tolerance, not a payment's amount)."""
    if isinstance(value, bool) or value is None:
        raise AmountError("must be a decimal string or number such as \"10.5\"")
    if isinstance(value, float):
        raise AmountError("must be sent as a string or an exact JSON number")
    if isinstance(value, Decimal):
        text = format(value, "f") if value.is_finite() else "nan"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise AmountError("must be a decimal string or number such as \"10.5\"")
    match = _PLAIN.match(text)
    if not match:
        raise AmountError("must be a plain decimal such as \"10.5\" (no sign, exponent, NaN or Infinity)")
    decimals = match.group(2) or ""
    if len(decimals) > 6:
        raise AmountError("has more than 6 decimals (USDT has 6)")
    amount = Decimal(text)
    if amount == 0 and not zero_allowed:
        raise AmountError("must be greater than 0")
    if to_micro(amount) > MAX_MICRO:
        raise AmountError("is too large")
    return amount.quantize(Decimal("0.000001"))


def to_micro(amount: Decimal) -> int:
    return int((amount * MICRO).to_integral_exact())


def from_micro(micro: int) -> Decimal:
    return (Decimal(micro) / MICRO).quantize(Decimal("0.000001"))


# What format_amount writes: a plain decimal, trailing zeros stripped ("10.5", "10", "0").
PLAIN_AMOUNT_PATTERN = r"^(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?$"


def format_amount(amount: Decimal | int | None) -> str:
    """Plain decimal string, trailing zeros stripped: ``10.5``, ``10``, ``0``."""
    if amount is None:
        return "0"
    if isinstance(amount, int):
        amount = from_micro(amount)
    text = format(amount.quantize(Decimal("0.000001")), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def format_rate(rate: Decimal | None) -> str | None:
    """A rate (any number of decimals) as a plain decimal string, trailing zeros stripped ("7.2", "100"), or None."""
    if rate is None:
        return None
    text = format(Decimal(rate), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
