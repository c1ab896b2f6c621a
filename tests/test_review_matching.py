"""Review tests: §4 matching rules and §3 webhooks end to end (simulated TronGrid -> watcher -> API)."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from standardwebhooks.webhooks import Webhook

from config import Config
from models import Payment, PaymentStatus
from tests.test_watcher import PAYER, USDT, WALLET, WALLET_B, create, events, get, log_types, make_watcher, pay
from tests.test_webhooks import Receiver, Reply
from times import ms_to_datetime
from tron_sim import Simulator
from webhooks import WebhookDispatcher


@pytest.fixture
def watch_config(config: Config, sim: Simulator, strategy: str) -> Config:
    return config.with_overrides(trongrid_api_url=sim.url, watcher_strategy=strategy, trongrid_max_rps=500.0,
                                 polling_interval_seconds=0.2, late_payment_window_seconds=3600)


@pytest.fixture
def watcher(db, watch_config: Config):
    w = make_watcher(db, watch_config)
    yield w
    w.stop()


def set_fields(db, payment: dict, **values) -> None:
    with db.transaction() as s:
        row = s.get(Payment, uuid.UUID(payment["id"]))
        for key, value in values.items():
            setattr(row, key, value)


def block_ts(sim: Simulator, tx: str) -> int:
    number = sim.tx_block(tx)
    return sim.chain.block(number).timestamp


# --- chain time: expiry vs a transfer mined after expires_at -------------------------------------

def test_review_transfer_mined_after_expiry_is_late_even_if_read_in_the_expiry_pass(client, auth, db, sim, watcher):
    p = create(client, auth, "10", expires_in_seconds=60)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"
    sim.advance(120)  # the next block is two minutes later: past expires_at
    tx = pay(sim, WALLET, 10_000_000)
    assert ms_to_datetime(block_ts(sim, tx)).isoformat() > p["expires_at"].replace("Z", "+00:00")
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "expired" and got["paid_late"] is True
    assert events(db, p) == ["payment.expired", "payment.paid_late"]


# --- the transition table for late money -------------------------------------------------------

def expire_now(sim, watcher, client, auth, p) -> None:
    sim.advance(121)  # past expires_at plus the account strategy's 60 s overlap
    sim.mine(3)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "expired"


def test_review_partial_money_on_an_expired_payment(client, auth, db, sim, watcher):
    p = create(client, auth, "10", expires_in_seconds=60)
    watcher.run_once()
    expire_now(sim, watcher, client, auth, p)
    pay(sim, WALLET, 4_000_000)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "expired" and got["paid_late"] is False and got["received_amount_usdt"] == "4"
    assert events(db, p) == ["payment.expired", "payment.partial"]
    pay(sim, WALLET, 6_000_000)  # the remaining amount completes it late
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "expired" and got["paid_late"] is True and got["received_amount_usdt"] == "10"
    assert len(got["transfers"]) == 2
    assert events(db, p) == ["payment.expired", "payment.partial", "payment.paid_late"]


def test_review_late_overpayment_keeps_the_larger_amount(client, auth, db, sim, watcher):
    p = create(client, auth, "10", expires_in_seconds=60)
    watcher.run_once()
    expire_now(sim, watcher, client, auth, p)
    pay(sim, WALLET, 12_500_000)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "expired" and got["paid_late"] is True and got["received_amount_usdt"] == "12.5"


def test_review_partial_money_on_a_cancelled_payment(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    assert client.post(f"/payments/{p['id']}/cancel", headers=auth).status_code == 200
    set_fields(db, p, cancelled_at=ms_to_datetime(sim.state()["head_timestamp"]))
    pay(sim, WALLET, 3_000_000)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "failed" and got["failure_reason"] == "cancelled"
    assert got["received_amount_usdt"] == "3" and got["paid_late"] is False
    assert events(db, p) == ["payment.cancelled", "payment.partial"]


def test_review_money_after_the_late_window_credits_nothing(client, auth, db, sim, watcher):
    p = create(client, auth, "10", expires_in_seconds=60)
    watcher.run_once()
    expire_now(sim, watcher, client, auth, p)
    set_fields(db, p, expires_at=ms_to_datetime(sim.state()["head_timestamp"]) - timedelta(seconds=3601))
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["received_amount_usdt"] == "0" and got["paid_late"] is False


# --- rule 1 ordering -----------------------------------------------------------------------------

def test_review_pending_beats_an_older_expired_payment_with_the_same_remaining(client, auth, db, sim, watcher):
    old = create(client, auth, "10", expires_in_seconds=60)
    new = create(client, auth, "10", unique_amount=True)  # 10.0001
    assert new["expected_amount_usdt"] == "10.0001"
    head = ms_to_datetime(sim.state()["head_timestamp"])
    # now both await exactly 10: the old one expired (before the transfer), the new one partly paid
    set_fields(db, old, status=PaymentStatus.expired, expires_at=head, created_at=head - timedelta(seconds=100))
    set_fields(db, new, received_amount_usdt=Decimal("0.0001"), created_at=head - timedelta(seconds=50))
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    assert get(client, auth, new)["status"] == "completed"
    assert get(client, auth, old)["received_amount_usdt"] == "0" and get(client, auth, old)["paid_late"] is False


def test_review_oldest_pending_first_with_the_same_remaining(client, auth, db, sim, watcher):
    a = create(client, auth, "5")
    b = create(client, auth, "5", unique_amount=True)  # 5.0001
    head = ms_to_datetime(sim.state()["head_timestamp"])
    # b is older, and partly paid so that both await exactly 5
    set_fields(db, b, received_amount_usdt=Decimal("0.0001"), created_at=head - timedelta(seconds=100))
    set_fields(db, a, created_at=head - timedelta(seconds=50))
    pay(sim, WALLET, 5_000_000)
    watcher.run_once()
    assert get(client, auth, b)["status"] == "completed"
    assert get(client, auth, a)["status"] == "pending" and get(client, auth, a)["received_amount_usdt"] == "0"


# --- rules 2 and 3 -------------------------------------------------------------------------------

def test_review_one_candidate_at_block_time_gets_a_non_exact_transfer(client, auth, db, sim, watcher):
    """A payment created after the transfer's block is no candidate: the older one is the only one."""
    a = create(client, auth, "10")
    tx = pay(sim, WALLET, 3_000_000)
    b = create(client, auth, "20")
    set_fields(db, b, created_at=ms_to_datetime(block_ts(sim, tx) + 1000))
    watcher.run_once()
    got = get(client, auth, a)
    assert got["status"] == "pending" and got["received_amount_usdt"] == "3" and got["transaction_hash"] == tx
    assert get(client, auth, b)["received_amount_usdt"] == "0"
    assert events(db, a) == ["payment.partial"]


def test_review_two_candidates_no_exact_match_is_unmatched_and_listed(client, auth, db, sim, watcher):
    a = create(client, auth, "10")
    b = create(client, auth, "20", expires_in_seconds=60)
    watcher.run_once()
    tx = pay(sim, WALLET, 7_000_000)
    watcher.run_once()
    for p in (a, b):
        got = get(client, auth, p)
        assert got["received_amount_usdt"] == "0" and got["transfers"] == []
        assert "unmatched" in log_types(client, auth, p)
    listed = client.get(f"/transfers?status=unmatched&wallet_address={WALLET}", headers=auth).get_json()
    assert [(t["transaction_hash"], t["amount_usdt"], t["payment_id"], t["to"], t["from"]) for t in
            listed["transfers"]] == [(tx, "7", None, WALLET, PAYER)]
    t = listed["transfers"][0]
    assert isinstance(t["log_index"], int) and isinstance(t["block_number"], int) and t["block_timestamp"]
    assert client.get("/transfers?status=credited", headers=auth).get_json()["transfers"] == []
    assert client.get(f"/transfers?wallet_address={WALLET_B}", headers=auth).get_json()["transfers"] == []
    assert client.get("/stats").get_json()["unmatched_transfers"] == 1


def test_review_completed_payment_does_not_take_a_second_payment(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["received_amount_usdt"] == "10" and len(got["transfers"]) == 1
    assert events(db, p) == ["payment.completed"]


# --- §3 webhooks end to end -------------------------------------------------------------------------

@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_review_webhook_end_to_end_body_headers_and_summary(client, auth, db, sim, watcher, watch_config, receiver):
    cfg = watch_config.with_overrides(webhook_retry_schedule=(0, 0, 0), webhook_timeout_seconds=2.0)
    p = create(client, auth, "10.25")
    set_fields(db, p, callback_url=receiver.url())
    receiver.script("/hook", Reply(status=500), Reply(status=200))
    pay(sim, WALLET, 4_000_000)
    watcher.run_once()
    pay(sim, WALLET, 6_250_000)
    watcher.run_once()
    dispatcher = WebhookDispatcher(db, cfg)
    for _ in range(4):
        dispatcher.run_once()
    got = receiver.to("/hook")
    # partial (500, then 200), then completed (200): in order, same id and body on the retry
    ids = [r.headers["webhook-id"] for r in got]
    assert len(got) == 3 and ids[0] == ids[1] != ids[2]
    assert got[0].body == got[1].body
    bodies = [json.loads(r.body) for r in got]
    assert [b["type"] for b in bodies] == ["payment.partial", "payment.partial", "payment.completed"]
    for r, b in zip(got, bodies, strict=True):
        assert set(b) == {"id", "type", "created_at", "data"} and b["id"] == r.headers["webhook-id"]
        Webhook(cfg.webhook_secret).verify(r.body, r.headers)
        assert int(r.headers["webhook-timestamp"]) > 0
    partial, completed = bodies[0]["data"], bodies[2]["data"]
    assert partial["status"] == "pending" and partial["received_amount_usdt"] == "4"
    assert partial["expected_amount_usdt"] == "10.25" and len(partial["transfers"]) == 1
    assert partial["transfers"][0]["amount_usdt"] == "4"
    assert completed["status"] == "completed" and completed["received_amount_usdt"] == "10.25"
    assert [t["amount_usdt"] for t in completed["transfers"]] == ["4", "6.25"]
    now = get(client, auth, p)
    assert set(completed) == set(now)
    assert now["callback_attempts"] == 1 and now["callback_success"] is True
    listed = client.get("/events", headers=auth).get_json()["events"]
    assert [(e["type"], e["state"], e["attempts"]) for e in listed] == [
        ("payment.partial", "delivered", 2), ("payment.completed", "delivered", 1)]
    logs = client.get(f"/payments/{p['id']}/logs", headers=auth).get_json()["logs"]
    attempts = [entry for entry in logs if entry["event_type"] in ("webhook_attempt", "webhook_delivered")]
    assert [entry["metadata"]["status_code"] for entry in attempts] == [500, 200, 200]
    for entry in logs:  # money in log metadata is always a plain string
        for key, value in (entry["metadata"] or {}).items():
            if key.endswith("amount_usdt"):
                assert isinstance(value, str) and "E" not in value, (key, value)


# --- the late window is chain time: a watcher catching up must not lose late money ---------------

@pytest.fixture
def lagging_sim() -> Iterator[Simulator]:
    """A chain whose solidified head is an hour behind the wall clock: what a watcher sees while it
    catches up after an hour-long outage (or an upstream that lags)."""
    import time

    simulator = Simulator(block_interval=0, solidify_depth=2, usdt_contract=USDT,
                          start_time_ms=int(time.time() * 1000) - 3_600_000)
    simulator.start()
    yield simulator
    simulator.stop()


def test_review_late_money_is_recorded_when_the_watcher_catches_up(client, auth, db, lagging_sim, config, strategy):
    sim = lagging_sim
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy=strategy, trongrid_max_rps=500.0,
                                late_payment_window_seconds=600)
    w = make_watcher(db, cfg)
    try:
        p = create(client, auth, "10")
        head = ms_to_datetime(sim.state()["solid_timestamp"])
        # expired (by chain time) 30 s before the money below is mined; well inside the 600 s window
        set_fields(db, p, created_at=head - timedelta(seconds=300), expires_at=head - timedelta(seconds=30),
                   status=PaymentStatus.expired)
        w.run_once()
        tx = pay(sim, WALLET, 10_000_000)
        assert block_ts(sim, tx) - int((head - timedelta(seconds=30)).timestamp() * 1000) < 600_000
        for _ in range(2):
            w.run_once()
        got = get(client, auth, p)
        assert got["paid_late"] is True and got["received_amount_usdt"] == "10"
    finally:
        w.stop()
