"""The sources and the background refresh: the stand-ins answer as the providers document; quotes are read exactly
and stored; garbage, errors and rate limits bring no quote and are counted; one process fetches for many."""
from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from infra.times import db_now
from models import RateQuote, RateSource
from rates.refresher import RateRefresher
from tests.rates.conftest import make_due
from tests.rates.stand_ins import COINGECKO_PATH, KRAKEN_PATH, Reply


def quotes(db) -> dict[tuple[str, str], Decimal]:
    with db.Session() as session:
        return {(q.source, q.currency): q.rate for q in session.scalars(select(RateQuote))}


def record(db, name: str) -> RateSource:
    with db.Session() as session:
        return session.get(RateSource, name)


def test_each_source_is_asked_as_documented_and_read_exactly(db, providers, refresh):
    assert sorted(refresh()) == ["coingecko", "kraken"]
    (asked,) = providers.asked(COINGECKO_PATH)
    assert asked == {"ids": ["tether"], "vs_currencies": ["usd,eur,cny"], "include_last_updated_at": ["true"]}
    # Kraken is asked only for the pairs it lists (not CNY), one pair a request
    assert sorted(q["pair"][0] for q in providers.asked(KRAKEN_PATH)) == ["USDTEUR", "USDTUSD"]
    assert quotes(db) == {("coingecko", "USD"): Decimal("1.0003"), ("coingecko", "EUR"): Decimal("0.9212"),
                          ("coingecko", "CNY"): Decimal("7.2415"), ("kraken", "USD"): Decimal("1.0001"),
                          ("kraken", "EUR"): Decimal("0.9215")}
    assert record(db, "coingecko").errors == 0 and record(db, "kraken").errors == 0


def test_a_number_is_read_from_its_digits_never_through_a_float(db, providers, refresh):
    providers.coingecko["cny"] = "7.123456789012"  # a float would make it 7.1234567890119998...
    providers.coingecko["usd"] = "1e0"  # an exponent is still a number, read exactly
    refresh()
    assert quotes(db)[("coingecko", "CNY")] == Decimal("7.123456789012")
    assert quotes(db)[("coingecko", "USD")] == Decimal(1)


@pytest.mark.parametrize("garbage", ["NaN", "-7.2", '"7.2"', "0", "null", "1e999", "true", "[7.2]", "0.0000000000001"])
def test_a_quote_that_is_not_a_positive_finite_number_is_no_quote(db, providers, refresh, garbage):
    providers.coingecko["cny"] = garbage
    refresh()
    stored = quotes(db)
    assert ("coingecko", "CNY") not in stored
    if garbage != "NaN":  # NaN is not JSON: nothing of that answer is believed; otherwise the other quotes stand
        assert stored[("coingecko", "USD")] == Decimal("1.0003")
    assert record(db, "coingecko").errors == 1
    assert record(db, "kraken").errors == 0


@pytest.mark.parametrize("reply", [
    Reply(200, b"<html><body>Cloudflare: checking your browser</body></html>", {"Content-Type": "text/html"}),
    Reply(200, b'{"tether": "down"}'),
    Reply(200, b'{"tether": {"cny": 7.2}}'),  # no last_updated_at
    Reply(200, b'{"tether": {"cny": 7.2, "last_updated_at": "yesterday"}}'),
    Reply(500, b'{"error": "internal"}'),
    Reply(200, b'{"tether": {"cny": 7.2, "pad": "' + b"x" * 70_000 + b'", "last_updated_at": 1}}'),  # over the cap
])
def test_an_answer_of_another_shape_brings_no_quote(db, providers, refresh, reply):
    providers.script(COINGECKO_PATH, reply)
    refresh()
    assert not [key for key in quotes(db) if key[0] == "coingecko"]
    source = record(db, "coingecko")
    assert source.errors == 1 and source.last_error and source.last_success_at is None
    assert "pad" not in source.last_error and "x" * 100 not in source.last_error


def test_kraken_errors_and_other_shapes_bring_no_quote(db, providers, refresh):
    providers.script(KRAKEN_PATH, Reply(200, b'{"error": ["EService:Unavailable"]}'),
                     Reply(200, b'{"error": [], "result": {"USDTEUR": {"c": ["-0.9", "1"]}}}'))
    refresh()
    assert ("kraken", "USD") not in quotes(db) and ("kraken", "EUR") not in quotes(db)
    assert record(db, "kraken").errors == 2
    last_error = record(db, "kraken").last_error or ""
    assert "EService:Unavailable" in last_error or "-0.9" in last_error


def test_a_rate_limit_pauses_the_source_for_its_retry_after(db, providers, refresh):
    providers.script(COINGECKO_PATH, Reply(429, b'{"status":{"error_code":429}}', {"Retry-After": "120"}))
    refresh()
    source = record(db, "coingecko")
    with db.Session() as session:
        now = db_now(session)
    assert source.paused_until is not None
    assert timedelta(seconds=110) < source.paused_until - now <= timedelta(seconds=121)
    before = len(providers.asked(COINGECKO_PATH))
    assert "coingecko" not in refresh()  # due again, but paused: not asked
    assert len(providers.asked(COINGECKO_PATH)) == before
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE rate_sources SET paused_until = now() - interval '1 second'"))
    assert "coingecko" in refresh()
    assert ("coingecko", "CNY") in quotes(db)


def test_a_new_currency_is_asked_for_from_the_next_refresh(db, providers, refresh, rates_config, rates_client,
                                                          auth):
    refresh()
    providers.coingecko["gbp"] = "0.7871"
    body = {"wallet_address": "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx", "price_amount": "10", "price_currency": "gbp",
            "order_id": "gbp-1", "callback_url": "http://127.0.0.1:9/hook"}
    assert rates_client.post("/payments", json=body, headers=auth).status_code == 503  # no quote of GBP yet
    refresher = RateRefresher(db, rates_config)
    assert sorted(refresher.run_once()) == ["coingecko", "kraken"]  # made due by the request, not by the clock
    assert providers.asked(COINGECKO_PATH)[-1]["vs_currencies"] == ["usd,eur,cny,gbp"]
    assert quotes(db)[("kraken", "GBP")] == Decimal("0.7877")
    assert refresher.run_once() == []  # and not again before RATE_REFRESH_SECONDS


def test_one_process_fetches_for_many(db, providers, rates_config):
    """Eight processes' refreshers passing at the same moment: each source is asked once."""
    refreshers = [RateRefresher(db, rates_config) for _ in range(8)]
    start = threading.Barrier(len(refreshers))
    fetched: list[list[str]] = []

    def one(refresher: RateRefresher) -> None:
        start.wait()
        fetched.append(refresher.run_once())

    for _ in range(2):  # the first time (rows created) and once due again
        threads = [threading.Thread(target=one, args=(r,)) for r in refreshers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        make_due(db)
    assert sorted(name for names in fetched for name in names) == ["coingecko", "coingecko", "kraken", "kraken"]
    assert len(providers.asked(COINGECKO_PATH)) == 2
    assert len(providers.asked(KRAKEN_PATH)) == 4  # USD and EUR, twice
    for refresher in refreshers:
        refresher.stop()


def test_the_background_thread_refreshes_on_its_own(db, providers, rates_config):
    refresher = RateRefresher(db, rates_config.with_overrides(rate_refresh_seconds=0.1))
    refresher.start()
    try:
        deadline = threading.Event()
        for _ in range(50):
            if len(providers.asked(COINGECKO_PATH)) >= 2:
                break
            deadline.wait(0.1)
    finally:
        refresher.stop()
    assert len(providers.asked(COINGECKO_PATH)) >= 2
    assert ("coingecko", "CNY") in quotes(db)


def test_a_slow_source_is_cut_at_its_deadline_and_no_request_waits_for_it(db, providers, refresh, rates_config,
                                                                          rates_client, auth):
    refresh()  # quotes stored
    providers.down[COINGECKO_PATH] = Reply(200, b'{"tether": {}}', delay=5.0)
    refresher = RateRefresher(db, rates_config.with_overrides(rate_timeout_seconds=1.5))
    make_due(db)
    background = threading.Thread(target=refresher.run_once)
    started = time.monotonic()
    background.start()
    body = {"wallet_address": "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx", "price_amount": "72.415",
            "price_currency": "CNY", "order_id": "while-slow", "callback_url": "http://127.0.0.1:9/hook"}
    r = rates_client.post("/payments", json=body, headers=auth)
    answered = time.monotonic() - started
    background.join(5)
    took = time.monotonic() - started
    assert r.status_code == 201 and r.get_json()["expected_amount_usdt"] == "10"
    assert answered < 1.0, answered  # the create read the stored quotes; the fetch was still under way
    assert 1.4 < took < 3.5, took  # the fetch was cut at its 1.5 s deadline, not held for the answer's 5 s
    assert "DeadlineExceeded" in (record(db, "coingecko").last_error or "")
    refresher.stop()
