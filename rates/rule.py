"""The rate rule (contract §8) and a price's USDT amount, as pure functions of what the database holds.

A currency's rate is its fixed rate when FIXED_RATES names it; else, from the latest quote of every configured
source no older than RATE_MAX_AGE_SECONDS: one quote as it is; two only when they differ by at most
RATE_MAX_DEVIATION_PERCENT of their mean (their mean); three or more: those further than that from their median are
left out, and the median of the rest. Anything else is no rate, with why."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Context, Decimal

from infra.money import MAX_MICRO, to_micro

FIXED = "fixed"  # a payment's rate_source when its rate came from FIXED_RATES
# Enough digits that a quotient of a 20-digit price by a 30-digit rate, times the markup, is exact where it matters
# (it is rounded up to PRICE_ROUNDING_USDT, at least 10^-6, afterwards).
EXACT = Context(prec=60)

# Why a currency has no rate (GET /rates states these).
NO_QUOTE = "no_quote"  # no source has quoted it yet
STALE = "stale"  # every quote is older than RATE_MAX_AGE_SECONDS
DISAGREE = "sources_disagree"  # the fresh quotes differ by more than RATE_MAX_DEVIATION_PERCENT
REASONS = (NO_QUOTE, STALE, DISAGREE)


@dataclass(frozen=True)
class Quote:
    source: str
    currency: str
    rate: Decimal  # units of the currency per 1 USDT
    quoted_at: datetime


@dataclass(frozen=True)
class Rate:
    """A usable rate: units of `currency` per 1 USDT, which sources made it ("fixed", or source names joined by
    commas), and the time of the oldest quote used (for a fixed rate: when it was read)."""

    currency: str
    rate: Decimal
    source: str
    at: datetime


@dataclass(frozen=True)
class NoRate:
    currency: str
    reason: str  # one of REASONS
    message: str


def median(values: Sequence[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return EXACT.divide(ordered[middle - 1] + ordered[middle], 2)


def within(value: Decimal, centre: Decimal, percent: Decimal) -> bool:
    """Whether `value` is at most `percent` of `centre` away from it (a quote beside the median)."""
    return abs(value - centre) * 100 <= percent * centre


def choose_rate(currency: str, fixed: Decimal | None, quotes: Sequence[Quote], now: datetime, max_age: float,
                deviation_percent: Decimal) -> Rate | NoRate:
    """The rate of `currency` now, from its fixed rate or from `quotes` (the latest of each configured source)."""
    if fixed is not None:
        return Rate(currency, fixed, FIXED, now)
    if not quotes:
        return NoRate(currency, NO_QUOTE, f"No rate source has quoted {currency} yet; try again shortly.")
    oldest_allowed = now - timedelta(seconds=max_age)
    fresh = [q for q in quotes if q.quoted_at >= oldest_allowed]
    if not fresh:
        return NoRate(currency, STALE, f"Every quote of {currency} is older than {max_age:g} seconds (its sources "
                                       "are failing); try again shortly.")
    if len(fresh) == 1:
        used, rate = fresh, fresh[0].rate
    elif len(fresh) == 2:
        mean = EXACT.divide(fresh[0].rate + fresh[1].rate, 2)
        if abs(fresh[0].rate - fresh[1].rate) * 100 > deviation_percent * mean:  # they differ by more than it
            return disagreement(currency, fresh, deviation_percent)
        used, rate = fresh, mean
    else:
        centre = median([q.rate for q in fresh])
        used = [q for q in fresh if within(q.rate, centre, deviation_percent)]
        if not used:
            return disagreement(currency, fresh, deviation_percent)
        rate = median([q.rate for q in used])
    return Rate(currency, rate, ",".join(sorted(q.source for q in used)), min(q.quoted_at for q in used))


def disagreement(currency: str, fresh: Sequence[Quote], deviation_percent: Decimal) -> NoRate:
    shown = ", ".join(f"{q.source} {q.rate.normalize():f}" for q in sorted(fresh, key=lambda q: q.source))
    return NoRate(currency, DISAGREE, f"The sources' quotes of {currency} differ by more than {deviation_percent}% "
                                      f"({shown}); no rate is used until they agree.")


class AmountTooLarge(ValueError):
    """A price whose USDT amount is over the largest amount the API accepts."""


def usdt_amount(price: Decimal, rate: Decimal, markup_percent: Decimal, rounding: Decimal) -> Decimal:
    """price ÷ rate × (1 + markup/100), rounded up to a multiple of `rounding` (in Decimal, exactly)."""
    raw = EXACT.multiply(EXACT.divide(price, rate), EXACT.add(1, EXACT.divide(markup_percent, 100)))
    steps = EXACT.divide(raw, rounding).to_integral_value(rounding=ROUND_CEILING)
    amount = EXACT.quantize(EXACT.multiply(steps, rounding), Decimal("0.000001"))
    if to_micro(amount) > MAX_MICRO:
        raise AmountTooLarge(f"{price} at {rate} per USDT is more USDT than a payment may await")
    return amount
