"""Money seen above the solid head (DETECT_UNCONFIRMED): announced once at inclusion, credited only at
solidification, dropped by a fork, never for a failed transaction; under both strategies."""
from __future__ import annotations

import json
import time

import pytest

from infra.config import Config
from models import EventState
from tests.conftest import PAYER, WALLET, create, event_states, events, get, log_types
from tron_sim import Simulator

DEPTH = 4  # blocks to solidify: short, so a test solidifies in a few mined blocks


@pytest.fixture
def deep_sim():  # type: ignore[no-untyped-def]
    with Simulator(block_interval=0, solidify_depth=DEPTH, follow_clock=True) as simulator:
        yield simulator


@pytest.fixture
def detect_config(config: Config, deep_sim: Simulator, strategy: str) -> Config:
    return config.with_overrides(trongrid_api_url=deep_sim.url, watcher_strategy=strategy, trongrid_max_rps=2000.0,
                                 polling_interval_seconds=0.2, detect_unconfirmed=True)


def test_seen_at_inclusion_credited_at_solidification_announced_once(new_watcher, client, auth, db, deep_sim,
                                                                      detect_config):
    watcher = new_watcher(detect_config)
    payment = create(client, auth, "10")
    watcher.run_once()
    tx = deep_sim.transfer(WALLET, 10_000_000, from_=PAYER)
    deep_sim.mine(1)  # in the head block, not solidified
    result = watcher.run_once()
    assert result.detected_unconfirmed == 1
    seen = get(client, auth, payment)
    assert seen["status"] == "pending" and seen["received_amount_usdt"] == "0" and seen["transfers"] == []
    assert seen["unconfirmed_amount_usdt"] == "10"
    [unconfirmed] = seen["unconfirmed_transfers"]
    assert unconfirmed["transaction_hash"] == tx and unconfirmed["amount_usdt"] == "10"
    assert unconfirmed["confirmations"] == 1
    assert events(db, payment) == ["payment.detected"]
    detected = client.get(f"/events?payment_id={payment['id']}", headers=auth).get_json()["events"][0]
    assert detected["type"] == "payment.detected"

    deep_sim.mine(2)
    watcher.run_once()
    again = get(client, auth, payment)
    assert again["unconfirmed_transfers"][0]["confirmations"] == 3 and again["status"] == "pending"
    assert events(db, payment) == ["payment.detected"]  # seen again: never announced twice

    deep_sim.mine(DEPTH)
    watcher.run_once()
    done = get(client, auth, payment)
    assert done["status"] == "completed" and done["received_amount_usdt"] == "10"
    assert done["unconfirmed_transfers"] == [] and done["unconfirmed_amount_usdt"] == "0"
    assert events(db, payment) == ["payment.detected", "payment.completed"]
    # the detection still pending (nothing listens on the callback) gave way to the completion
    assert event_states(db, payment) == [("payment.detected", EventState.superseded.value),
                                         ("payment.completed", EventState.pending.value)]


def test_solidified_before_it_was_seen_is_simply_credited(new_watcher, client, auth, db, deep_sim, detect_config):
    watcher = new_watcher(detect_config)
    payment = create(client, auth, "7")
    watcher.run_once()
    deep_sim.transfer(WALLET, 7_000_000, from_=PAYER)
    deep_sim.mine(DEPTH + 1)
    watcher.run_once()
    assert get(client, auth, payment)["status"] == "completed"
    assert events(db, payment) == ["payment.completed"]


def test_a_fork_drops_a_detected_transfer(new_watcher, client, auth, db, deep_sim, detect_config):
    watcher = new_watcher(detect_config)
    payment = create(client, auth, "3")
    watcher.run_once()
    tx = deep_sim.transfer(WALLET, 3_000_000, from_=PAYER)
    deep_sim.mine(2)
    watcher.run_once()
    assert get(client, auth, payment)["unconfirmed_amount_usdt"] == "3"
    deep_sim.fork(2, drop=(tx,))
    deep_sim.mine(1)
    watcher.run_once()
    dropped = get(client, auth, payment)
    assert dropped["unconfirmed_transfers"] == [] and dropped["status"] == "pending"
    assert "detection_dropped" in log_types(client, auth, payment)
    deep_sim.mine(DEPTH + 2)
    watcher.run_once()
    final = get(client, auth, payment)
    assert final["status"] == "pending" and final["received_amount_usdt"] == "0"
    assert events(db, payment) == ["payment.detected"]


def test_a_fork_that_keeps_the_transfer_announces_it_once(new_watcher, client, auth, db, deep_sim, detect_config):
    watcher = new_watcher(detect_config)
    payment = create(client, auth, "4")
    watcher.run_once()
    deep_sim.transfer(WALLET, 4_000_000, from_=PAYER)
    deep_sim.mine(1)
    watcher.run_once()
    deep_sim.fork(1)  # the same transaction in another block of the same number
    deep_sim.mine(1)
    watcher.run_once()
    assert get(client, auth, payment)["unconfirmed_amount_usdt"] == "4"
    deep_sim.mine(DEPTH)
    watcher.run_once()
    assert get(client, auth, payment)["status"] == "completed"
    assert events(db, payment) == ["payment.detected", "payment.completed"]


def test_a_failed_transfer_is_never_announced(new_watcher, client, auth, db, deep_sim, detect_config):
    watcher = new_watcher(detect_config)
    payment = create(client, auth, "5")
    watcher.run_once()
    deep_sim.transfer(WALLET, 5_000_000, from_=PAYER, reverted=True)
    deep_sim.mine(1)
    watcher.run_once()
    assert get(client, auth, payment)["unconfirmed_transfers"] == []
    deep_sim.mine(DEPTH + 1)
    watcher.run_once()
    assert get(client, auth, payment)["status"] == "pending"
    assert events(db, payment) == []


def test_a_lying_head_fabricates_no_detection(new_watcher, client, auth, db, deep_sim, detect_config):
    watcher = new_watcher(detect_config.with_overrides(tron_block_seconds=3.0, upstream_clock_skew_seconds=30.0))
    payment = create(client, auth, "6")
    watcher.run_once()
    deep_sim.set_fault("head_future", None, path_prefix="/wallet/")  # every full-node head lies
    deep_sim.transfer(WALLET, 6_000_000, from_=PAYER)
    deep_sim.mine(1)
    result = watcher.run_once()
    assert any("head" in r and "refused" in r for r in result.refused)
    assert get(client, auth, payment)["unconfirmed_transfers"] == []
    assert events(db, payment) == []


# --- what stays unreadable is set aside, not waited for forever ---------------------------------------

def test_an_unreadable_receipt_is_set_aside_and_credited_once_readable(new_watcher, client, auth, db, sim,
                                                                       watch_config, strategy):
    watcher = new_watcher(watch_config.with_overrides(unreadable_wait_seconds=0.3))
    first, second = create(client, auth, "5"), create(client, auth, "6")
    watcher.run_once()
    stuck = sim.transfer(WALLET, 5_000_000, from_=PAYER)
    sim.withhold_receipt(stuck)
    sim.mine(1)
    spam = sim.transfer(WALLET, 1, from_=PAYER)  # a second unreadable one right after: the same wait covers it
    sim.withhold_receipt(spam)
    sim.mine(1)
    sim.transfer(WALLET, 6_000_000, from_=PAYER)
    sim.solidify()
    watcher.run_once()
    assert get(client, auth, second)["status"] == "pending"  # within the bounded wait: nothing passes it
    time.sleep(0.35)
    result = watcher.run_once()
    assert result.set_aside == 2  # one bounded wait for the held position, not one per unreadable item
    assert get(client, auth, second)["status"] == "completed"  # what follows it is credited
    assert get(client, auth, first)["status"] == "pending"
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and "set aside as unreadable" in health["watcher"]["last_error"]
    assert WALLET not in json.dumps(health)
    assert 'tron_usdt_set_aside_total' in client.get("/metrics").get_data(as_text=True)
    if strategy == "account":
        aside, _ = client.get("/transfers?status=set_aside", headers=auth).get_json()["transfers"][::-1]
        assert aside["transaction_hash"] == stuck and aside["reason"] == "unreadable"
        assert aside["log_index"] is None and aside["amount_usdt"] == "5" and aside["status"] == "set_aside"
    else:
        assert health["watcher"]["set_aside"]["blocks"] == 2
    sim.withhold_receipt(stuck, False)
    sim.withhold_receipt(spam, False)
    watcher.run_once()  # the reconciliation asks again, and credits it by the usual rules
    assert get(client, auth, first)["status"] == "completed"
    assert client.get("/transfers?status=set_aside", headers=auth).get_json()["transfers"] == []
    assert client.get("/health").get_json()["watcher"]["set_aside"] == {"records": 0, "blocks": 0}


def test_a_small_budget_reaches_the_head_over_several_cycles(new_watcher, client, auth, db, deep_sim, detect_config):
    # 5 requests a cycle (the heads take 2, and the first cycle's overshoot is paid back first): a new leader
    # walking down the blocks above the solid head keeps what each cycle read, and detects within some cycles
    # instead of starting over every cycle
    watcher = new_watcher(detect_config.with_overrides(trongrid_max_rps=25.0, polling_interval_seconds=0.25))
    payment = create(client, auth, "8")
    deep_sim.transfer(WALLET, 8_000_000, from_=PAYER)
    deep_sim.mine(DEPTH)  # the transfer's block and the blocks above it, all above the solid head
    for _ in range(40):
        watcher.run_once()
        if get(client, auth, payment)["unconfirmed_transfers"]:
            break
    assert get(client, auth, payment)["unconfirmed_amount_usdt"] == "8"
    assert events(db, payment) == ["payment.detected"]


def test_a_failing_full_node_api_holds_up_no_credit(new_watcher, client, auth, db, deep_sim, detect_config):
    # an upstream that serves the solidified API only (java-tron's solidity port), or whose /wallet calls fail
    watcher = new_watcher(detect_config)
    payment = create(client, auth, "9")
    watcher.run_once()
    deep_sim.set_fault("500", None, path_prefix="/wallet/")
    deep_sim.transfer(WALLET, 9_000_000, from_=PAYER)
    deep_sim.mine(DEPTH + 1)
    result = watcher.run_once()
    assert any(e.startswith("detection:") for e in result.errors)
    assert get(client, auth, payment)["status"] == "completed"
    assert events(db, payment) == ["payment.completed"]


def test_a_kept_block_that_pays_a_watched_wallet_is_read_again_from_the_solidified_api(
        new_watcher, client, auth, db, deep_sim, detect_config, strategy):
    if strategy != "blocks":
        pytest.skip("the block scan's reuse of blocks read above the solid head")
    watcher = new_watcher(detect_config)
    payment = create(client, auth, "2")
    for _ in range(DEPTH + 2):  # steady state: every block read above the solid head as it comes
        watcher.run_once()
        deep_sim.mine(1)
    deep_sim.reset_counts()
    deep_sim.transfer(WALLET, 2_000_000, from_=PAYER)
    for _ in range(DEPTH + 3):
        deep_sim.mine(1)
        watcher.run_once()
    assert get(client, auth, payment)["status"] == "completed"
    counts = deep_sim.request_counts()
    # the paying block once more from /walletsolidity; the other blocks were taken as read above the solid head
    assert counts.get("/walletsolidity/gettransactioninfobyblocknum") == 1, counts
