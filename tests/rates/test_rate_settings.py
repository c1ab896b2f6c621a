"""The rate settings: defaults, the sandbox's fixed rates, and a bad value named in one clear line."""
from __future__ import annotations

from decimal import Decimal

import pytest

from infra.config import ConfigError, load_config


def test_defaults_follow_the_contract():
    config = load_config({})
    assert config.rate_sources == (("coingecko", "https://api.coingecko.com"), ("kraken", "https://api.kraken.com"))
    assert config.fixed_rates == ()
    assert (config.rate_refresh_seconds, config.rate_max_age_seconds) == (60.0, 300.0)
    assert (config.rate_max_deviation_percent, config.rate_markup_percent, config.price_rounding_usdt) == \
        (Decimal(2), Decimal(0), Decimal("0.01"))


def test_the_sandbox_prices_with_fixed_rates_unless_told_otherwise():
    sandbox = load_config({"TRON_NETWORK": "sandbox"})
    assert sandbox.rate_sources == ()
    assert sandbox.fixed_rates == (("USD", Decimal(1)), ("EUR", Decimal("0.92")), ("CNY", Decimal("7.2")))
    own = load_config({"TRON_NETWORK": "sandbox", "FIXED_RATES": "cny=7.10"})
    assert own.fixed_rates == (("CNY", Decimal("7.10")),) and own.rate_sources == ()
    live = load_config({"TRON_NETWORK": "sandbox", "RATE_SOURCES": "kraken=http://127.0.0.1:9"})
    assert live.fixed_rates == () and live.rate_sources == (("kraken", "http://127.0.0.1:9"),)


def test_sources_and_fixed_rates_are_read():
    config = load_config({"RATE_SOURCES": "Kraken, coingecko=https://pro-api.coingecko.com/",
                          "FIXED_RATES": "CNY=7.10, eur=0.92", "RATE_MARKUP_PERCENT": "-2.5",
                          "PRICE_ROUNDING_USDT": "0.000001", "RATE_MAX_DEVIATION_PERCENT": "0.5"})
    assert config.rate_sources == (("kraken", "https://api.kraken.com"), ("coingecko", "https://pro-api.coingecko.com"))
    assert config.fixed_rates == (("CNY", Decimal("7.10")), ("EUR", Decimal("0.92")))
    assert config.rate_markup_percent == Decimal("-2.5") and config.price_rounding_usdt == Decimal("0.000001")
    assert load_config({"RATE_SOURCES": "none"}).rate_sources == ()


@pytest.mark.parametrize(("name", "value"), [
    ("RATE_SOURCES", "binance"),
    ("RATE_SOURCES", "kraken,kraken"),
    ("RATE_SOURCES", "kraken=ftp://example.com"),
    ("FIXED_RATES", "CNY"),
    ("FIXED_RATES", "XYZ=7"),
    ("FIXED_RATES", "CNY=0"),
    ("FIXED_RATES", "CNY=-7"),
    ("FIXED_RATES", "CNY=7e0"),
    ("FIXED_RATES", "CNY=7,CNY=8"),
    ("RATE_REFRESH_SECONDS", "soon"),
    ("RATE_MAX_AGE_SECONDS", "0"),
    ("RATE_MAX_DEVIATION_PERCENT", "-1"),
    ("RATE_MARKUP_PERCENT", "-50"),
    ("RATE_MARKUP_PERCENT", "1e1"),
    ("PRICE_ROUNDING_USDT", "0"),
    ("PRICE_ROUNDING_USDT", "2"),
    ("PRICE_ROUNDING_USDT", "0.0000001"),
    ("PRICE_ROUNDING_USDT", "NaN"),
])
def test_a_bad_value_is_named(name, value):
    with pytest.raises(ConfigError) as caught:
        load_config({name: value})
    assert name in str(caught.value) and "\n" not in str(caught.value)
