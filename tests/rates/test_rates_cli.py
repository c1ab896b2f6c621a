"""`db_manager.py rates`, run as a real subprocess against the test database."""
from __future__ import annotations

import json

from tests.test_db_manager import cli_env, ok, one_line_failure, run_cli


def test_rates_shows_each_currency_and_each_source(db, database_url, providers, refresh):
    refresh()
    env = cli_env(RATE_SOURCES=f"coingecko={providers.url},kraken={providers.url}", FIXED_RATES="JPY=155.5")
    out = ok(run_cli(database_url, "rates", env=env))
    assert "CNY: 7.2415 per USDT from coingecko," in out
    assert "EUR: 0.92135 per USDT from coingecko,kraken" in out
    assert "JPY: 155.5 per USDT from fixed" in out
    assert f"source kraken ({providers.url}): 0 errors" in out and "  GBP" not in out
    report = json.loads(ok(run_cli(database_url, "rates", "--json", env=env)))
    assert [c["currency"] for c in report["currencies"]] == ["USD", "EUR", "CNY", "JPY"]
    bad = one_line_failure(run_cli(database_url, "rates", env=cli_env(FIXED_RATES="CNY=seven")))
    assert "FIXED_RATES" in bad
