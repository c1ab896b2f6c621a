"""The rate rule (contract §8) and a price's USDT amount, as pure functions."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rates.rule import DISAGREE, FIXED, NO_QUOTE, STALE, AmountTooLarge, NoRate, Quote, Rate, choose_rate, usdt_amount

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
D = Decimal


def q(source: str, rate: str, age: float = 10) -> Quote:
    return Quote(source, "CNY", D(rate), NOW - timedelta(seconds=age))


def rule(*quotes: Quote, fixed: str | None = None, max_age: float = 300, deviation: str = "2") -> Rate | NoRate:
    return choose_rate("CNY", None if fixed is None else D(fixed), list(quotes), NOW, max_age, D(deviation))


def test_one_quote_is_used_as_it_is():
    rate = rule(q("coingecko", "7.2415", age=40))
    assert rate == Rate("CNY", D("7.2415"), "coingecko", NOW - timedelta(seconds=40))


def test_two_quotes_give_their_mean_only_when_they_agree():
    rate = rule(q("kraken", "7.20", age=5), q("coingecko", "7.30", age=50))
    assert isinstance(rate, Rate)
    assert rate.rate == D("7.25") and rate.source == "coingecko,kraken" and rate.at == NOW - timedelta(seconds=50)
    apart = rule(q("kraken", "7.12"), q("coingecko", "7.28"))  # 0.16 apart is 2.2 % of their mean, 7.2
    assert isinstance(apart, NoRate) and apart.reason == DISAGREE
    assert "CNY" in apart.message and "coingecko 7.28" in apart.message and "kraken 7.12" in apart.message
    # exactly at the limit is still agreement: 7.128 and 7.272 differ by 2 % of 7.2
    assert isinstance(rule(q("a", "7.128"), q("b", "7.272")), Rate)


def test_three_or_more_leave_out_outliers_and_take_the_median_of_the_rest():
    rate = rule(q("a", "7.20"), q("b", "7.22"), q("c", "9.00"))
    assert isinstance(rate, Rate) and rate.rate == D("7.21") and rate.source == "a,b"
    rate = rule(q("a", "7.20"), q("b", "7.21"), q("c", "7.22"))
    assert isinstance(rate, Rate) and rate.rate == D("7.21") and rate.source == "a,b,c"
    # four quotes, the median between the middle two; one far off left out
    rate = rule(q("a", "7.10"), q("b", "7.20"), q("c", "7.25"), q("d", "1.00"))  # median 7.15
    assert isinstance(rate, Rate) and rate.rate == D("7.20") and rate.source == "a,b,c"
    # no quote near the median: no rate
    spread = rule(q("a", "1"), q("b", "5"), q("c", "9"), q("d", "13"))
    assert isinstance(spread, NoRate) and spread.reason == DISAGREE


def test_stale_quotes_are_never_used():
    assert rule(q("coingecko", "7.2", age=301)).reason == STALE  # type: ignore[union-attr]
    # a stale quote beside a fresh one is left out: the fresh one alone is the rate
    rate = rule(q("coingecko", "7.2", age=10), q("kraken", "9.9", age=1000))
    assert isinstance(rate, Rate) and rate.rate == D("7.2") and rate.source == "coingecko"
    assert rule().reason == NO_QUOTE  # type: ignore[union-attr]


def test_a_fixed_rate_stands_whatever_the_quotes_say():
    rate = rule(q("coingecko", "9.9"), fixed="7.10")
    assert rate == Rate("CNY", D("7.10"), FIXED, NOW)


@pytest.mark.parametrize(("price", "rate", "markup", "rounding", "expected"), [
    ("720", "7.2", "0", "0.01", "100"),
    ("720", "7.22", "0", "0.01", "99.73"),  # 99.7229... rounded up
    ("720", "7.2", "1.5", "0.01", "101.5"),
    ("720", "7.2", "-10", "0.01", "90"),
    ("100", "3", "0", "0.000001", "33.333334"),  # up, never to the nearest
    ("100", "3", "0", "1", "34"),
    ("0.01", "7.2", "0", "0.01", "0.01"),  # never 0
    ("99.99", "1", "0", "0.01", "99.99"),  # already a multiple: unchanged
])
def test_the_amount_is_rounded_up_to_the_step(price, rate, markup, rounding, expected):
    assert usdt_amount(D(price), D(rate), D(markup), D(rounding)) == D(expected)


def test_an_amount_over_the_largest_is_refused():
    with pytest.raises(AmountTooLarge):
        usdt_amount(D("99999999999999"), D("0.000000000001"), D(0), D("0.01"))
    assert usdt_amount(D("99999999999999"), D("7.2"), D(0), D("0.01")) == D("13888888888888.75")
