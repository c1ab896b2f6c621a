"""Payments priced in fiat through the API: the amount from the rate, the rate locked at creation (later quotes,
replays), no rate → 503 with nothing stored and one operator event per outage, the currencies and inputs refused,
GET /rates, /health and /metrics."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from app import create_app
from infra.notify_targets import RATE_UNAVAILABLE
from models import PaymentLog, WebhookEvent
from tests.conftest import HOOK, WALLET, assert_error, count_rows
from tests.rates.conftest import age_quotes
from tests.rates.stand_ins import COINGECKO_PATH, KRAKEN_PATH, Reply


def priced(price: str = "720", currency: str = "CNY", **extra: object) -> dict[str, object]:
    return {"wallet_address": WALLET, "price_amount": price, "price_currency": currency,
            "order_id": extra.pop("order_id", uuid.uuid4().hex), "callback_url": HOOK, **extra}


def outage_events(db) -> list[PaymentLog]:
    with db.Session() as session:
        return list(session.scalars(select(PaymentLog).where(PaymentLog.event_type == RATE_UNAVAILABLE)
                                    .order_by(PaymentLog.id)))


@pytest.fixture
def fixed_client(config, db):
    cfg = config.with_overrides(rate_sources=(), fixed_rates=(("CNY", Decimal("7.2")), ("EUR", Decimal("0.92")),
                                                               ("XAU", Decimal("0.0004"))))
    return create_app(cfg, database=db).test_client()


def test_a_price_becomes_its_usdt_amount_at_the_fixed_rate(fixed_client, auth, db):
    r = fixed_client.post("/payments", json=priced("720", "cny"), headers=auth)
    assert r.status_code == 201, r.get_json()
    payment = r.get_json()
    assert payment["expected_amount_usdt"] == "100"
    assert (payment["price_amount"], payment["price_currency"], payment["rate"], payment["rate_source"]) == \
        ("720", "CNY", "7.2", "fixed")
    assert payment["rate_at"].endswith("Z")
    again = fixed_client.get(f"/payments/{payment['id']}", headers=auth).get_json()
    assert {k: again[k] for k in ("price_amount", "price_currency", "rate", "rate_source", "rate_at")} == \
        {k: payment[k] for k in ("price_amount", "price_currency", "rate", "rate_source", "rate_at")}
    listed = fixed_client.get("/payments", headers=auth).get_json()["payments"][0]
    assert listed["rate"] == "7.2" and listed["price_currency"] == "CNY"
    (log,) = fixed_client.get(f"/payments/{payment['id']}/logs", headers=auth).get_json()["logs"]
    assert log["metadata"]["rate"] == "7.2" and "priced 720 CNY" in log["message"]
    # the webhook carries them too
    assert fixed_client.post(f"/payments/{payment['id']}/cancel", headers=auth).status_code == 200
    (event,) = fixed_client.get("/events", headers=auth).get_json()["events"]
    assert event["type"] == "payment.cancelled"
    assert {k: event["data"][k] for k in ("price_amount", "price_currency", "rate", "rate_source", "rate_at")} == \
        {k: payment[k] for k in ("price_amount", "price_currency", "rate", "rate_source", "rate_at")}
    # a payment given in USDT carries the five fields as null
    usdt = {k: v for k, v in priced().items() if not k.startswith("price_")}
    plain = fixed_client.post("/payments", json={**usdt, "expected_amount_usdt": "5"}, headers=auth)
    body = plain.get_json()
    assert plain.status_code == 201 and [body[k] for k in ("price_amount", "price_currency", "rate", "rate_source",
                                                           "rate_at")] == [None] * 5


def test_markup_and_rounding_up(config, db, auth):
    cfg = config.with_overrides(rate_sources=(), fixed_rates=(("CNY", Decimal("7.22")),),
                                rate_markup_percent=Decimal("1.5"), price_rounding_usdt=Decimal("0.1"))
    client = create_app(cfg, database=db).test_client()
    r = client.post("/payments", json=priced("720"), headers=auth)
    # 720 / 7.22 = 99.7229..., × 1.015 = 101.2188..., up to a multiple of 0.1
    assert r.status_code == 201 and r.get_json()["expected_amount_usdt"] == "101.3"


def test_unique_amount_works_on_the_priced_amount(fixed_client, auth):
    first = fixed_client.post("/payments", json=priced("720"), headers=auth)
    assert first.get_json()["expected_amount_usdt"] == "100"
    assert_error(fixed_client.post("/payments", json=priced("720"), headers=auth), 409, "expected_amount_usdt")
    second = fixed_client.post("/payments", json=priced("720", unique_amount=True), headers=auth)
    assert second.status_code == 201 and second.get_json()["expected_amount_usdt"] == "100.0001"
    assert second.get_json()["price_amount"] == "720"


def test_the_rate_from_the_sources_is_locked_at_creation(rates_client, auth, db, providers, refresh):
    refresh()
    order = priced("100", "EUR", order_id="eur-1")
    r = rates_client.post("/payments", json=order, headers=auth)
    assert r.status_code == 201, r.get_json()
    payment = r.get_json()
    # coingecko 0.9212 and kraken 0.9215 agree: their mean, 0.92135; 100 / 0.92135 = 108.536..., up to 108.54
    assert (payment["rate"], payment["rate_source"], payment["expected_amount_usdt"]) == \
        ("0.92135", "coingecko,kraken", "108.54")
    providers.coingecko["eur"], providers.kraken["EUR"] = "0.8000", "0.80000"
    refresh()
    replay = rates_client.post("/payments", json=order, headers=auth)
    assert replay.status_code == 200
    assert {k: replay.get_json()[k] for k in ("id", "rate", "expected_amount_usdt", "rate_at")} == \
        {k: payment[k] for k in ("id", "rate", "expected_amount_usdt", "rate_at")}
    # a replay needs no rate: with every source down and every quote stale it still answers the payment as created
    providers.down[COINGECKO_PATH] = providers.down[KRAKEN_PATH] = Reply(503, b"down")
    age_quotes(db, 3600)
    assert rates_client.post("/payments", json=order, headers=auth).get_json()["rate"] == "0.92135"
    assert_error(rates_client.post("/payments", json={**order, "price_amount": "101"}, headers=auth), 409, "order_id")
    fresh = rates_client.post("/payments", json=priced("100", "EUR"), headers=auth)
    assert_error(fresh, 503)
    # CNY is quoted by coingecko alone: its one quote is used as it is
    providers.down.clear()
    refresh()
    cny = rates_client.post("/payments", json=priced("72.415", "CNY"), headers=auth).get_json()
    assert (cny["rate"], cny["rate_source"], cny["expected_amount_usdt"]) == ("7.2415", "coingecko", "10")


def test_no_usable_rate_is_a_503_with_nothing_stored_and_one_event_per_outage(rates_client, auth, db, providers,
                                                                            refresh):
    r = rates_client.post("/payments", json=priced("720", "CNY"), headers=auth)
    error = assert_error(r, 503)
    assert error["error"] == "rate_unavailable" and "CNY" in error["message"] and "quoted" in error["message"]
    assert_error(rates_client.post("/payments", json=priced("720", "CNY"), headers=auth), 503)
    assert len(outage_events(db)) == 1  # the first 503 (no quote yet) opened the outage; announced once
    refresh()  # quotes: that outage is over
    providers.down[COINGECKO_PATH] = providers.down[KRAKEN_PATH] = Reply(500, b"{}")
    age_quotes(db, 301)
    refresh()
    for _ in range(3):
        error = assert_error(rates_client.post("/payments", json=priced("720", "CNY"), headers=auth), 503)
        assert "CNY" in error["message"] and "older than 300" in error["message"]
    assert count_rows(db) == 0
    events = outage_events(db)
    assert [e.event_metadata["reason"] for e in events] == ["no_quote", "stale"]  # a second outage, announced once
    assert events[1].payment_id is None and events[1].event_metadata["currency"] == "CNY"
    assert count_rows(db, WebhookEvent) == 0  # no merchant webhook, nothing in /events
    assert rates_client.get("/events", headers=auth).get_json()["events"] == []
    health = rates_client.get("/health").get_json()
    assert health["status"] == "degraded" and health["rates"] == {"unavailable": ["CNY"]}
    # the sources come back: the outage ends; the next one is announced again
    providers.down.clear()
    refresh()
    assert rates_client.post("/payments", json=priced("720", "CNY"), headers=auth).status_code == 201
    assert rates_client.get("/health").get_json()["rates"] == {"unavailable": []}
    providers.coingecko["eur"], providers.kraken["EUR"] = "0.9000", "0.95000"  # 5.4 % apart
    refresh()
    error = assert_error(rates_client.post("/payments", json=priced("10", "EUR"), headers=auth), 503)
    assert "differ" in error["message"] and "EUR" in error["message"]
    assert [e.event_metadata["currency"] for e in outage_events(db)] == ["CNY", "CNY", "EUR"]
    assert count_rows(db) == 1


@pytest.mark.parametrize(("currency", "why"), [("XYZ", "not an ISO 4217"), ("ZMW", "not quoted"),
                                               ("BTC", "not an ISO 4217")])
def test_a_currency_no_source_documents_is_a_400(rates_client, auth, db, currency, why):
    error = assert_error(rates_client.post("/payments", json=priced("10", currency), headers=auth), 400,
                         "price_currency")
    assert error["error"] == "unsupported_currency" and why in error["message"]
    assert count_rows(db) == 0 and outage_events(db) == []


@pytest.mark.parametrize(("change", "status", "field"), [
    ({"expected_amount_usdt": "10"}, 400, "price_amount"),  # both ways
    ({"price_amount": None, "price_currency": None}, 400, "expected_amount_usdt"),  # neither
    ({"price_currency": None}, 400, "price_currency"),
    ({"price_amount": None}, 400, "price_amount"),
    ({"price_currency": "US"}, 400, "price_currency"),
    ({"price_currency": "ÜSD"}, 400, "price_currency"),
    ({"price_currency": 840}, 400, "price_currency"),
    ({"price_amount": "-1"}, 400, "price_amount"),
    ({"price_amount": "1e3"}, 400, "price_amount"),
    ({"price_amount": "0"}, 400, "price_amount"),
    ({"price_amount": "1.0000001"}, 400, "price_amount"),
    ({"price_amount": 1.5}, 201, None),  # an exact JSON number is an amount too
    ({"price_amount": "99999999999999", "price_currency": "XAU"}, 400, "price_amount"),  # too many USDT
    ({"underpayment_tolerance_usdt": "101"}, 400, "underpayment_tolerance_usdt"),  # over the priced 100
])
def test_bad_price_input_is_refused_and_stores_nothing(fixed_client, auth, db, change, status, field):
    body = {k: v for k, v in {**priced("720"), **change}.items() if v is not None}
    r = fixed_client.post("/payments", json=body, headers=auth)
    if status == 201:
        assert r.status_code == 201, r.get_json()
        return
    error = assert_error(r, status, field)
    assert count_rows(db) == 0, error


def test_get_rates_shows_each_currency_and_each_source(rates_client, auth, providers, refresh):
    assert rates_client.get("/rates").status_code == 401
    before = rates_client.get("/rates", headers=auth).get_json()
    assert {c["currency"]: c["reason"] for c in before["currencies"]} == {"USD": "no_quote", "EUR": "no_quote",
                                                                          "CNY": "no_quote"}
    providers.coingecko["eur"] = "0.9000"  # kraken says 0.9215: 2.4 % of their mean apart
    refresh()
    rates = rates_client.get("/rates", headers=auth).get_json()
    by_code = {c["currency"]: c for c in rates["currencies"]}
    assert by_code["USD"]["rate"] == "1.0002" and by_code["USD"]["rate_source"] == "coingecko,kraken"
    assert by_code["CNY"]["rate"] == "7.2415" and by_code["CNY"]["age_seconds"] >= 0
    assert by_code["EUR"]["rate"] is None and by_code["EUR"]["reason"] == "sources_disagree"
    sources = {s["name"]: s for s in rates["sources"]}
    assert {q["currency"]: q["rate"] for q in sources["kraken"]["quotes"]} == {"EUR": "0.9215", "USD": "1.0001"}
    assert sources["coingecko"]["errors"] == 0 and sources["coingecko"]["last_success_at"]
    assert rates["max_deviation_percent"] == "2" and rates["price_rounding_usdt"] == "0.01"


def test_metrics_show_each_rate_age_and_each_source_errors(rates_client, providers, refresh):
    providers.script(KRAKEN_PATH, Reply(500, b"{}"))
    refresh()
    text = rates_client.get("/metrics").get_data(as_text=True)
    assert 'tron_usdt_rate_available{currency="CNY"} 1.0' in text
    assert 'tron_usdt_rate_age_seconds{currency="CNY"}' in text
    assert 'tron_usdt_rate_source_errors_total{source="kraken"} 1.0' in text
    assert 'tron_usdt_rate_source_errors_total{source="coingecko"} 0.0' in text


def test_at_most_twenty_currencies_are_asked_for(rates_client, auth, db, providers):
    asked = ["AED", "ARS", "AUD", "BDT", "BHD", "BMD", "BRL", "CAD", "CHF", "CLP", "CZK", "DKK", "GBP", "GEL", "HKD",
             "HUF", "IDR"]  # with USD, EUR and CNY: twenty
    for code in asked:
        assert_error(rates_client.post("/payments", json=priced("10", code), headers=auth), 503)  # no quote yet
    error = assert_error(rates_client.post("/payments", json=priced("10", "ILS"), headers=auth), 400,
                         "price_currency")
    assert error["error"] == "unsupported_currency" and "20 currencies" in error["message"]
    assert_error(rates_client.post("/payments", json=priced("10", "GBP"), headers=auth), 503)  # one of them: asked
    codes = [c["currency"] for c in rates_client.get("/rates", headers=auth).get_json()["currencies"]]
    assert len(codes) == 20 and "ILS" not in codes and codes[:3] == ["USD", "EUR", "CNY"]
    assert count_rows(db) == 0
