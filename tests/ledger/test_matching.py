"""The matching rules end to end (simulated TronGrid -> watcher -> PostgreSQL -> API): a transfer's candidates,
which of them gets it, the transition table for late money, and chain time deciding what is on time."""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from infra.config import Config
from infra.times import ms_to_datetime, to_ms
from ledger.matching import assign_transfer, credit_transfer
from ledger.records import TransferLog
from models import Payment, PaymentLog, PaymentStatus, WebhookEvent
from tests.conftest import (
    PAYER,
    USDT,
    WALLET,
    WALLET_B,
    block_ts,
    create,
    events,
    get,
    log_types,
    pass_time,
    pay,
    pay_and_read,
    set_fields,
)
from tron_sim import Simulator


@pytest.fixture
def watch_config(watch_config: Config) -> Config:
    """An hour's late window: the tests below move chain time by minutes."""
    return watch_config.with_overrides(late_payment_window_seconds=3600)


# --- chain time: expiry vs a transfer mined after expires_at -------------------------------------

def test_transfer_mined_after_expiry_is_late_even_if_read_in_the_expiry_pass(client, auth, db, sim, watcher):
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

def expired_payment(sim, watcher, client, auth) -> dict:
    """A payment of 10 that expired by chain time, nothing received."""
    p = create(client, auth, "10", expires_in_seconds=60)
    watcher.run_once()
    sim.advance(121)  # past expires_at plus the account strategy's 60 s overlap
    sim.mine(3)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "expired"
    return p


def test_partial_money_on_an_expired_payment(client, auth, db, sim, watcher):
    p = expired_payment(sim, watcher, client, auth)
    got = pay_and_read(sim, watcher, client, auth, p, 4_000_000)
    assert got["status"] == "expired" and got["paid_late"] is False and got["received_amount_usdt"] == "4"
    assert events(db, p) == ["payment.expired", "payment.partial"]
    got = pay_and_read(sim, watcher, client, auth, p, 6_000_000)  # the remaining amount completes it late
    assert got["status"] == "expired" and got["paid_late"] is True and got["received_amount_usdt"] == "10"
    assert len(got["transfers"]) == 2
    assert events(db, p) == ["payment.expired", "payment.partial", "payment.paid_late"]


def test_late_overpayment_keeps_the_larger_amount(client, auth, db, sim, watcher):
    p = expired_payment(sim, watcher, client, auth)
    got = pay_and_read(sim, watcher, client, auth, p, 12_500_000)
    assert got["status"] == "expired" and got["paid_late"] is True and got["received_amount_usdt"] == "12.5"


def test_partial_money_on_a_cancelled_payment(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    assert client.post(f"/payments/{p['id']}/cancel", headers=auth).status_code == 200
    set_fields(db, p, cancelled_at=ms_to_datetime(sim.state()["head_timestamp"]))
    pay(sim, WALLET, 3_000_000)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "failed" and got["failure_reason"] == "cancelled"
    assert got["received_amount_usdt"] == "3" and got["paid_late"] is False
    assert events(db, p) == ["payment.cancelled", "payment.partial"]


def test_money_after_the_late_window_credits_nothing(client, auth, db, sim, watcher):
    p = expired_payment(sim, watcher, client, auth)
    set_fields(db, p, expires_at=ms_to_datetime(sim.state()["head_timestamp"]) - timedelta(seconds=3601))
    got = pay_and_read(sim, watcher, client, auth, p, 10_000_000)
    assert got["received_amount_usdt"] == "0" and got["paid_late"] is False


# --- rule 1: a tie goes to no one ---------------------------------------------------------------

def assert_ambiguous(client, auth, tx: str, *payments: dict) -> dict:
    """The transfer is unmatched as `ambiguous`, none of `payments` got it, and the audit log says why."""
    for p in payments:
        got = get(client, auth, p)
        assert got["received_amount_usdt"] == "0" or got["transaction_hash"] != tx
        assert tx not in [t["transaction_hash"] for t in got["transfers"]]
    [listed] = client.get("/transfers?status=unmatched", headers=auth).get_json()["transfers"]
    assert listed["transaction_hash"] == tx and listed["reason"] == "ambiguous" and listed["payment_id"] is None
    return listed


def test_a_pending_and_an_expired_payment_with_the_same_remaining_tie(client, auth, db, sim, watcher):
    old = create(client, auth, "10", expires_in_seconds=60)
    new = create(client, auth, "10", unique_amount=True)  # 10.0001
    assert new["expected_amount_usdt"] == "10.0001"
    head = ms_to_datetime(sim.state()["head_timestamp"])
    # now both await exactly 10: the old one expired (before the transfer), the new one partly paid
    set_fields(db, old, status=PaymentStatus.expired, expires_at=head, created_at=head - timedelta(seconds=100))
    set_fields(db, new, received_amount_usdt=Decimal("0.0001"), created_at=head - timedelta(seconds=50))
    tx = pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    assert_ambiguous(client, auth, tx, old, new)
    assert get(client, auth, new)["status"] == "pending" and get(client, auth, old)["paid_late"] is False
    [(kind, data)] = account_events(db)
    assert kind == "transfer.unmatched" and data["reason"] == "ambiguous" and data["open_payments_count"] == 2
    assert {p["id"] for p in data["open_payments"]} == {old["id"], new["id"]}


def test_two_pending_payments_with_the_same_remaining_tie_whatever_their_age(client, auth, db, sim, watcher):
    a = create(client, auth, "5")
    b = create(client, auth, "5", unique_amount=True)  # 5.0001
    head = ms_to_datetime(sim.state()["head_timestamp"])
    # b is older, and partly paid so that both await exactly 5
    set_fields(db, b, received_amount_usdt=Decimal("0.0001"), created_at=head - timedelta(seconds=100))
    set_fields(db, a, created_at=head - timedelta(seconds=50))
    tx = pay(sim, WALLET, 5_000_000)
    watcher.run_once()
    assert_ambiguous(client, auth, tx, a, b)
    assert [get(client, auth, p)["status"] for p in (a, b)] == ["pending", "pending"]
    [entry] = [row for row in audit_rows(db) if row.event_type == "unmatched"]
    assert entry.payment_id is None and entry.event_metadata["reason"] == "ambiguous"
    assert set(entry.event_metadata["tied_payment_ids"]) == {a["id"], b["id"]}
    # the operator decides: assigned by hand (db_manager.py assign-transfer), the payment completes
    with db.transaction() as session:
        assign_transfer(session, tx, 0, uuid.UUID(b["id"]), 3600)
    assert get(client, auth, b)["status"] == "completed" and get(client, auth, a)["received_amount_usdt"] == "0"
    [credited] = client.get("/transfers?status=credited", headers=auth).get_json()["transfers"]
    assert credited["payment_id"] == b["id"] and credited["reason"] is None


def audit_rows(db) -> list[PaymentLog]:
    with db.Session() as s:
        return list(s.scalars(select(PaymentLog).order_by(PaymentLog.id)))


# --- rules 2 and 3 -------------------------------------------------------------------------------

def test_one_candidate_at_block_time_gets_a_non_exact_transfer(client, auth, db, sim, watcher):
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


def test_two_candidates_no_exact_match_is_unmatched_and_listed(client, auth, db, sim, watcher):
    a = create(client, auth, "10")
    b = create(client, auth, "20", expires_in_seconds=60)
    watcher.run_once()
    tx = pay(sim, WALLET, 7_000_000)
    watcher.run_once()
    for p in (a, b):
        got = get(client, auth, p)
        assert got["received_amount_usdt"] == "0" and got["transfers"] == []
    # one audit row for the transfer, not one per open payment
    [entry] = [row for row in audit_rows(db) if row.event_type == "unmatched"]
    assert entry.payment_id is None and entry.event_metadata["reason"] == "no_exact_match"
    assert entry.event_metadata["open_payments_count"] == 2
    listed = client.get(f"/transfers?status=unmatched&wallet_address={WALLET}", headers=auth).get_json()
    assert [(t["transaction_hash"], t["amount_usdt"], t["payment_id"], t["to"], t["from"], t["reason"]) for t in
            listed["transfers"]] == [(tx, "7", None, WALLET, PAYER, "no_exact_match")]
    t = listed["transfers"][0]
    assert isinstance(t["log_index"], int) and isinstance(t["block_number"], int) and t["block_timestamp"]
    assert client.get("/transfers?status=credited", headers=auth).get_json()["transfers"] == []
    assert client.get(f"/transfers?wallet_address={WALLET_B}", headers=auth).get_json()["transfers"] == []
    assert client.get("/stats").get_json()["unmatched_transfers"] == 1


def test_completed_payment_does_not_take_a_second_payment(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    pass_time(sim, 600)  # the wallet stays watched for the late window (an hour here) after the completion
    tx = pay(sim, WALLET, 2_500_000)  # a topping-up transfer, the wallet's only payment completed
    watcher.run_once()
    got = get(client, auth, p)
    assert got["received_amount_usdt"] == "10" and len(got["transfers"]) == 1
    assert events(db, p) == ["payment.completed"]
    # stored as unmatched and announced, never silently unseen
    listed = client.get("/transfers?status=unmatched", headers=auth).get_json()["transfers"]
    assert [(t["transaction_hash"], t["amount_usdt"]) for t in listed] == [(tx, "2.5")]
    [(kind, data)] = account_events(db)
    assert kind == "transfer.unmatched" and data == {**listed[0], "open_payments": [], "open_payments_count": 0}
    assert listed[0]["reason"] == "no_candidate"


def test_money_after_the_late_window_of_a_completion_is_not_watched(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    set_fields(db, p, completed_at=ms_to_datetime(sim.state()["head_timestamp"]) - timedelta(seconds=3601))
    pay(sim, WALLET, 2_500_000)
    watcher.run_once()
    assert client.get("/transfers?status=unmatched", headers=auth).get_json()["transfers"] == []
    assert account_events(db) == []


def account_events(db) -> list[tuple[str, dict]]:
    """(type, data) of the account-level events, in the order they happened."""
    with db.Session() as s:
        rows = s.scalars(select(WebhookEvent).where(WebhookEvent.stream == "account").order_by(WebhookEvent.seq))
        return [(e.type, json.loads(e.body)["data"]) for e in rows]


# --- underpayment tolerance: one threshold for completion, paid_late and reopening ----------------

@pytest.mark.parametrize("strategy", ["account"])
@pytest.mark.parametrize(("paid", "status", "received", "shortfall", "kind"), [
    (10_000_000, "completed", "10", "0", "payment.completed"),        # exact
    (9_600_000, "completed", "9.6", "0.4", "payment.completed"),      # within the tolerance
    (9_500_000, "completed", "9.5", "0.5", "payment.completed"),      # at its edge
    (9_499_999, "pending", "9.499999", "0", "payment.partial"),       # below it
    (12_000_000, "completed", "12", "0", "payment.completed"),        # overpayment unchanged
])
def test_tolerance_on_a_pending_payment(client, auth, db, sim, watcher, paid, status, received, shortfall, kind):
    p = create(client, auth, "10", underpayment_tolerance_usdt="0.5")
    assert (p["underpayment_tolerance_usdt"], p["shortfall_usdt"]) == ("0.5", "0")
    got = pay_and_read(sim, watcher, client, auth, p, paid)
    assert (got["status"], got["received_amount_usdt"], got["shortfall_usdt"]) == (status, received, shortfall)
    [event] = payment_event_bodies(db, p)
    assert event["type"] == kind
    assert (event["data"]["shortfall_usdt"], event["data"]["underpayment_tolerance_usdt"]) == (shortfall, "0.5")


@pytest.mark.parametrize("strategy", ["account"])
def test_tolerance_does_not_change_which_payment_gets_a_transfer(client, auth, db, sim, watcher):
    """Two candidates, none awaiting exactly the amount: a short transfer stays unmatched whatever the tolerance."""
    a = create(client, auth, "10", underpayment_tolerance_usdt="0.5")
    b = create(client, auth, "20", underpayment_tolerance_usdt="0.5")
    tx = pay(sim, WALLET, 9_800_000)
    watcher.run_once()
    for p in (a, b):
        assert get(client, auth, p)["received_amount_usdt"] == "0"
    [(kind, data)] = account_events(db)
    assert kind == "transfer.unmatched" and data["transaction_hash"] == tx and data["status"] == "unmatched"
    assert sorted(o["id"] for o in data["open_payments"]) == sorted([a["id"], b["id"]])
    assert {(o["id"], o["expected_amount_usdt"], o["received_amount_usdt"], o["status"]) for o in data["open_payments"]
            } == {(a["id"], "10", "0", "pending"), (b["id"], "20", "0", "pending")}
    assert data["reason"] == "no_exact_match" and data["open_payments_count"] == 2


@pytest.mark.parametrize("strategy", ["account"])
def test_tolerance_makes_late_money_paid_late(client, auth, db, sim, watcher):
    p = create(client, auth, "10", expires_in_seconds=60, underpayment_tolerance_usdt="0.25")
    watcher.run_once()
    sim.advance(121)
    sim.mine(3)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "expired"
    got = pay_and_read(sim, watcher, client, auth, p, 9_800_000)
    assert (got["status"], got["paid_late"], got["shortfall_usdt"]) == ("expired", True, "0.2")
    assert events(db, p) == ["payment.expired", "payment.paid_late"]


@pytest.mark.parametrize("strategy", ["account"])
def test_tolerance_reopens_a_cancellation_by_money_mined_before_it(client, auth, db, sim, watcher):
    p = create(client, auth, "10", underpayment_tolerance_usdt="0.25")
    tx = pay(sim, WALLET, 9_750_000)
    assert client.post(f"/payments/{p['id']}/cancel", headers=auth).status_code == 200
    set_fields(db, p, cancelled_at=ms_to_datetime(block_ts(sim, tx) + 1000))  # it took effect after the transfer
    watcher.run_once()
    got = get(client, auth, p)
    assert (got["status"], got["failure_reason"], got["shortfall_usdt"]) == ("completed", None, "0.25")
    assert events(db, p) == ["payment.cancelled", "payment.completed"]
    assert "reopened" in log_types(client, auth, p)


def payment_event_bodies(db, payment: dict) -> list[dict]:
    with db.Session() as s:
        rows = s.scalars(select(WebhookEvent.body).where(WebhookEvent.payment_id == uuid.UUID(payment["id"]))
                         .order_by(WebhookEvent.seq))
        return [json.loads(body) for body in rows]



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


def test_late_money_is_recorded_when_the_watcher_catches_up(new_watcher, client, auth, db, lagging_sim, config,
                                                            strategy):
    sim = lagging_sim
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy=strategy, trongrid_max_rps=2000.0,
                                late_payment_window_seconds=600)  # a budget that reads the history in a cycle
    w = new_watcher(cfg)
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

# --- crediting waits for a locked payment ---------------------------------------------------------

def test_expiry_waits_for_a_locked_payment_instead_of_passing_it_by(client, auth, db):
    p = create(client, auth, "5")
    pid = uuid.UUID(p["id"])
    with db.Session() as s:
        expires = s.get(Payment, pid).expires_at
    late = TransferLog("ab" * 32, 0, PAYER, WALLET, 5_000_000, 1, to_ms(expires) + 1000)
    holder = db.Session()
    holder.begin()
    holder.execute(select(Payment.id).where(Payment.id == pid).with_for_update())  # e.g. a webhook being recorded

    def credit() -> None:
        with db.transaction() as s:
            credit_transfer(s, late, 86400)

    thread = threading.Thread(target=credit)
    thread.start()
    time.sleep(0.3)
    holder.commit()
    holder.close()
    thread.join(10)
    got = get(client, auth, p)
    assert got["status"] == "expired" and got["paid_late"] is True
    with db.Session() as s:
        kinds = list(s.scalars(select(WebhookEvent.type).where(WebhookEvent.payment_id == pid)
                               .order_by(WebhookEvent.seq)))
    assert kinds == ["payment.expired", "payment.paid_late"]



def test_a_read_payment_is_the_payment_its_webhook_carries(client, auth, db, sim, watcher):
    """GET /payments/<id> reads Core rows, the outbox serialises ORM objects: the same payment either way."""
    p = create(client, auth, "10")
    pay_and_read(sim, watcher, client, auth, p, 4_000_000)
    got = pay_and_read(sim, watcher, client, auth, p, 6_000_000)
    with db.Session() as s:
        latest = s.scalars(select(WebhookEvent.body).where(WebhookEvent.payment_id == uuid.UUID(p["id"]))
                           .order_by(WebhookEvent.seq.desc())).first()
    assert got["status"] == "completed" and len(got["transfers"]) == 2
    assert got == json.loads(latest)["data"]
