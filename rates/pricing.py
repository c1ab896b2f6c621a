"""A request's currency made a rate: which codes can be priced, and the rate a new payment is created with."""
from __future__ import annotations

from decimal import Decimal

from database import Database
from infra.config import MAX_RATE_CURRENCIES, Config
from infra.currencies import is_iso_4217
from rates.rule import NoRate, Rate, usdt_amount
from rates.sources import SOURCES
from rates.store import announce_outage, note_asked, rates_now


class UnsupportedCurrency(ValueError):
    """A code no configured source documents and no fixed rate names (or not ISO 4217 at all)."""


class RateUnavailable(Exception):
    """A covered currency with no usable rate now."""

    def __init__(self, missing: NoRate) -> None:
        super().__init__(missing.message)
        self.missing = missing


def coverage(config: Config) -> frozenset[str]:
    """The codes a price may be given in: FIXED_RATES' and those some configured source documents."""
    codes: set[str] = {code for code, _ in config.fixed_rates}
    for name, _ in config.rate_sources:
        codes |= SOURCES[name].covers
    return frozenset(codes)


def check_currency(config: Config, code: str) -> str:
    """`code` upper case, when a price may be given in it; UnsupportedCurrency otherwise."""
    if not is_iso_4217(code):
        raise UnsupportedCurrency(f"{code[:8]!r} is not an ISO 4217 currency code.")
    code = code.upper()
    if code not in coverage(config):
        sources = ", ".join(name for name, _ in config.rate_sources) or "no rate source (RATE_SOURCES=none)"
        raise UnsupportedCurrency(f"{code} is not quoted by {sources} and FIXED_RATES does not name it.")
    return code


def rate_for_new_payment(db: Database, config: Config, code: str) -> Rate:
    """The rate a payment priced in `code` is created with now: read from the database, never waiting for a source.
    Records that `code` was asked for (the sources are asked for it from then on). No usable rate: the operator
    event `rate.unavailable`, once per outage, in its own transaction, then RateUnavailable."""
    code = check_currency(config, code)
    with db.transaction() as session:
        if not note_asked(session, config, code):
            raise UnsupportedCurrency(f"The rate sources already follow {MAX_RATE_CURRENCIES} currencies; {code} "
                                      "can be priced once one of them goes unused for a week, or with FIXED_RATES.")
        rate = rates_now(session, config, [code])[code]
    if isinstance(rate, NoRate):
        with db.transaction() as session:
            announce_outage(session, rate)
        raise RateUnavailable(rate)
    return rate


def price_in_usdt(config: Config, price: Decimal, rate: Rate) -> Decimal:
    """The USDT amount of `price` at `rate`, with RATE_MARKUP_PERCENT, rounded up to PRICE_ROUNDING_USDT."""
    return usdt_amount(price, rate.rate, config.rate_markup_percent, config.price_rounding_usdt)
