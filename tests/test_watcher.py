"""End to end: simulated TronGrid over HTTP -> watcher -> PostgreSQL -> API: each matching rule, chain-time expiry,
faults of the upstream, two watchers and the leader lock, the report /health shows."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from chain.upstream import PAUSE_CAP_SECONDS
from infra.config import Config
from infra.times import ms_to_datetime
from ledger.matching import AssignError, assign_transfer
from models import Payment, PaymentLog, Transfer
from tests.conftest import (
    PAYER,
    WALLET,
    WALLET_B,
    create,
    event_states,
    events,
    get,
    lock_holder_pid,
    log_types,
    pass_time,
    pay,
    pay_and_read,
    set_fields,
    wait_for,
)
from tron_sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
FAKE_USDT = "TXL6rJbvmjD46zeN1JssfgxvSo99qC8MRT"


def test_exact_payment_completes_with_event_and_logs(client, auth, db, sim, watcher):
    p = create(client, auth, "10.5")
    tx = pay(sim, WALLET, 10_500_000)
    result = watcher.run_once()
    assert result is not None and result.credited == 1
    got = get(client, auth, p)
    assert got["status"] == "completed" and got["received_amount_usdt"] == "10.5"
    assert got["transaction_hash"] == tx and got["completed_at"] is not None
    assert [t["transaction_hash"] for t in got["transfers"]] == [tx]
    assert events(db, p) == ["payment.completed"]
    assert {"transfer_seen", "completed", "webhook_queued"} <= set(log_types(client, auth, p))
    listed = client.get("/transfers?status=credited", headers=auth).get_json()["transfers"]
    assert listed[0]["payment_id"] == p["id"] and listed[0]["amount_usdt"] == "10.5"


def test_more_than_200_transfers_between_two_polls(client, auth, db, sim, watcher, strategy):
    a = create(client, auth, "7")
    b = create(client, auth, "9")
    for _ in range(250):
        sim.transfer(WALLET, 1_000_000, from_=PAYER)
    sim.transfer(WALLET, 7_000_000, from_=PAYER)
    sim.transfer(WALLET, 9_000_000, from_=PAYER)
    sim.solidify()
    credited = unmatched = 0
    for _ in range(10):  # the account strategy verifies receipts within its request budget, cycle by cycle
        result = watcher.run_once()
        credited, unmatched = credited + result.credited, unmatched + result.unmatched
        if credited == 2:
            break
    # Every transfer taken in chain order: the 250 small ones while both payments were open.
    assert unmatched == 250 and credited == 2
    assert get(client, auth, a)["status"] == "completed" and get(client, auth, b)["status"] == "completed"
    if strategy == "account":
        assert sim.request_counts().get(f"/v1/accounts/{WALLET}/transactions/trc20", 0) >= 2  # paged


def test_fake_usdt_from_another_contract_is_ignored(client, auth, db, sim, watcher):
    p = create(client, auth, "5")
    sim.set_fault("ignore_contract_filter", count=None)
    pay(sim, WALLET, 5_000_000, contract=FAKE_USDT)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"
    assert client.get("/transfers", headers=auth).get_json()["transfers"] == []


def test_unconfirmed_transfer_waits_for_solidification(client, auth, db, sim, watcher):
    p = create(client, auth, "3")
    sim.transfer(WALLET, 3_000_000, from_=PAYER)
    sim.mine(1)
    sim.set_fault("hide_unconfirmed_flag", count=None)  # even a list that leaks unconfirmed ones is safe
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"
    sim.clear_faults()
    sim.solidify()
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


def test_reverted_transaction_credits_nothing(client, auth, db, sim, watcher, strategy):
    p = create(client, auth, "4")
    pay(sim, WALLET, 4_000_000, reverted=True)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"
    if strategy == "account":  # the TRC20 list showed it, the receipt said REVERT: logged as rejected
        assert "transfer_rejected" in log_types(client, auth, p)
    assert client.get("/transfers", headers=auth).get_json()["transfers"] == []


def test_transfer_older_than_the_payment_does_not_count(client, auth, db, sim, watcher):
    p = create(client, auth, "6")
    pay(sim, WALLET, 6_000_000)
    block_ts = sim.state()["head_timestamp"]
    set_fields(db, p, created_at=ms_to_datetime(block_ts + 1000))  # the payment was made after that block
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"


def test_same_transaction_seen_twice_is_credited_once(client, auth, db, sim, watcher):
    p = create(client, auth, "2", unique_amount=True)
    pay(sim, WALLET, 1_000_000)
    watcher.run_once()
    with db.transaction() as s:
        s.execute(text("DELETE FROM wallet_cursors"))  # forget how far we read: everything is read again
    watcher.run_once()
    got = get(client, auth, p)
    assert got["received_amount_usdt"] == "1" and len(got["transfers"]) == 1
    assert events(db, p) == ["payment.partial"]


def test_one_transaction_pays_two_payments(client, auth, db, sim, watcher):
    a = create(client, auth, "1.5")
    b = create(client, auth, "2.5")
    c = create(client, auth, "8", wallet=WALLET_B)
    tx = sim.transaction([{"to": WALLET, "amount": 1_500_000, "from": PAYER},
                          {"to": WALLET, "amount": 2_500_000, "from": PAYER},
                          {"to": WALLET_B, "amount": 8_000_000, "from": PAYER}])
    sim.solidify()
    watcher.run_once()
    for p in (a, b, c):
        got = get(client, auth, p)
        assert got["status"] == "completed" and got["transaction_hash"] == tx
    indexes = sorted(t["log_index"] for t in client.get("/transfers", headers=auth).get_json()["transfers"])
    assert indexes == [0, 1, 2]


def test_partial_then_complete(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    got = pay_and_read(sim, watcher, client, auth, p, 4_000_000)
    assert got["status"] == "pending" and got["received_amount_usdt"] == "4"
    got = pay_and_read(sim, watcher, client, auth, p, 6_000_000)
    assert got["status"] == "completed" and got["received_amount_usdt"] == "10" and len(got["transfers"]) == 2
    assert events(db, p) == ["payment.partial", "payment.completed"]


def test_overpayment_completes_and_keeps_the_larger_amount(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    got = pay_and_read(sim, watcher, client, auth, p, 12_345_678)
    assert got["status"] == "completed" and got["received_amount_usdt"] == "12.345678"


def test_unmatched_transfer_is_kept_listed_and_assigned_by_hand(client, auth, db, sim, watcher, watch_config):
    a = create(client, auth, "10")
    create(client, auth, "20")
    tx = pay(sim, WALLET, 15_000_000)
    result = watcher.run_once()
    assert result.unmatched == 1
    unmatched = client.get("/transfers?status=unmatched", headers=auth).get_json()["transfers"]
    assert [(t["transaction_hash"], t["amount_usdt"], t["payment_id"]) for t in unmatched] == [(tx, "15", None)]
    assert client.get("/stats").get_json()["unmatched_transfers"] == 1
    assert unmatched[0]["reason"] == "no_exact_match"
    with db.transaction() as s:
        assign_transfer(s, tx, unmatched[0]["log_index"], uuid.UUID(a["id"]), watch_config.late_payment_window_seconds)
    got = get(client, auth, a)
    assert got["status"] == "completed" and got["received_amount_usdt"] == "15"
    assert "assigned" in log_types(client, auth, a)
    with db.transaction() as s, pytest.raises(AssignError):
        assign_transfer(s, tx, unmatched[0]["log_index"], uuid.UUID(a["id"]), 60)
    assert client.get("/transfers?status=unmatched", headers=auth).get_json()["transfers"] == []


def test_mined_before_expiry_solidified_after_is_on_time(client, auth, db, sim, watcher):
    p = create(client, auth, "10", expires_in_seconds=60)
    sim.transfer(WALLET, 10_000_000, from_=PAYER)
    sim.mine(1)
    mined_at = sim.state()["head_timestamp"]
    watcher.run_once()  # not solidified yet: nothing, and no expiry either
    assert get(client, auth, p)["status"] == "pending"
    sim.advance(120)
    sim.mine(4)  # the solid head is now past expires_at, and so is the block with the transfer
    assert sim.state()["solid_timestamp"] > mined_at + 60_000
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "completed" and got["paid_late"] is False
    assert events(db, p) == ["payment.completed"]


def test_expiry_by_chain_time_then_late_payment(client, auth, db, sim, watcher):
    p = create(client, auth, "10", expires_in_seconds=60)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"  # chain time has not reached expires_at
    pass_time(sim, 121)  # the account strategy expires an overlap (60 s) behind what it read
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "expired" and events(db, p) == ["payment.expired"]
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "expired" and got["paid_late"] is True and got["received_amount_usdt"] == "10"
    assert events(db, p) == ["payment.expired", "payment.paid_late"]


def test_late_money_while_a_new_payment_is_pending_on_the_wallet(client, auth, db, sim, watcher):
    old = create(client, auth, "10", expires_in_seconds=60)
    pass_time(sim, 121)  # the account strategy expires an overlap (60 s) behind what it read
    watcher.run_once()
    assert get(client, auth, old)["status"] == "expired"
    new = create(client, auth, "20")
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    assert get(client, auth, old)["paid_late"] is True
    assert get(client, auth, new)["status"] == "pending" and get(client, auth, new)["received_amount_usdt"] == "0"
    pay(sim, WALLET, 20_000_000)
    watcher.run_once()
    assert get(client, auth, new)["status"] == "completed"


def test_money_before_and_after_a_cancellation(client, auth, db, sim, watcher):
    before = create(client, auth, "10")
    sim.transfer(WALLET, 10_000_000, from_=PAYER)
    sim.mine(1)
    mined_at = sim.state()["head_timestamp"]
    assert client.post(f"/payments/{before['id']}/cancel", headers=auth).status_code == 200
    with db.transaction() as s:  # the merchant cancelled after that block was mined
        s.get(Payment, uuid.UUID(before["id"])).cancelled_at = ms_to_datetime(mined_at) + timedelta(seconds=1)
    sim.solidify()
    watcher.run_once()
    got = get(client, auth, before)
    assert got["status"] == "completed" and got["failure_reason"] is None and got["paid_late"] is False
    assert events(db, before) == ["payment.cancelled", "payment.completed"]

    after = create(client, auth, "7")
    assert client.post(f"/payments/{after['id']}/cancel", headers=auth).status_code == 200
    with db.transaction() as s:
        head = sim.state()["head_timestamp"]
        s.get(Payment, uuid.UUID(after["id"])).cancelled_at = ms_to_datetime(head)
    pay(sim, WALLET, 7_000_000)
    watcher.run_once()
    got = get(client, auth, after)
    assert got["status"] == "failed" and got["failure_reason"] == "cancelled" and got["paid_late"] is True
    assert events(db, after) == ["payment.cancelled", "payment.paid_late"]


def test_429_storm_pauses_then_recovers(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    pay(sim, WALLET, 10_000_000)
    sim.set_fault("429", count=None, seconds=1)
    result = watcher.run_once()
    assert result.errors and get(client, auth, p)["status"] == "pending"
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and health["watcher"]["upstream_paused_until"] is not None
    sent_while_paused = sim.count("/")
    watcher.run_once()  # still paused: sends nothing
    assert sim.count("/") == sent_while_paused
    sim.clear_faults()
    time.sleep(1.1)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


def test_5xx_answers_are_retried(client, auth, db, sim, watcher):
    p = create(client, auth, "10")
    pay(sim, WALLET, 10_000_000)
    sim.set_fault("500", count=2)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


@pytest.mark.parametrize("fault", ["error_200", "not_json", "503"])
def test_malformed_or_failing_answers_lose_nothing(client, auth, db, sim, watcher, fault, strategy):
    p = create(client, auth, "10")
    watcher.run_once()
    pay(sim, WALLET, 10_000_000)
    prefix = "/v1/" if strategy == "account" else "/walletsolidity/gettransactioninfobyblocknum"
    sim.set_fault(fault, count=None, path_prefix=prefix)
    result = watcher.run_once()
    assert result.errors and get(client, auth, p)["status"] == "pending"
    sim.clear_faults()
    assert wait_for(lambda: watcher.client.paused_until is None, timeout=2)  # 503 pauses the upstream a moment
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


def test_an_error_on_one_wallet_does_not_stop_the_others(client, auth, db, sim, watcher, strategy):
    if strategy == "blocks":
        pytest.skip("the blocks strategy makes no per-wallet request")
    a = create(client, auth, "10")
    b = create(client, auth, "10", wallet=WALLET_B)
    pay(sim, WALLET, 10_000_000)
    pay(sim, WALLET_B, 10_000_000)
    sim.set_fault("not_json", count=None, path_prefix=f"/v1/accounts/{WALLET}/")
    watcher.run_once()
    assert get(client, auth, a)["status"] == "pending" and get(client, auth, b)["status"] == "completed"


def test_two_watchers_in_one_database_credit_once(new_watcher, client, auth, db, sim, watch_config):
    p = create(client, auth, "10")
    one, two = new_watcher(watch_config), new_watcher(watch_config)
    try:
        assert one.run_once() is not None
        assert two.run_once() is None  # stands by while the other holds the lock
        pay(sim, WALLET, 10_000_000)
        one.run_once()
        two.run_once()
    finally:
        one.stop()
        two.stop()
    with db.Session() as s:
        assert len(s.scalars(select(Transfer)).all()) == 1
    assert events(db, p) == ["payment.completed"]


def watcher_process(database_url: str, sim_url: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "TRONGRID_API_URL": sim_url, "WATCHER_STRATEGY": "account",
           "POLLING_INTERVAL_SECONDS": "0.2", "TRONGRID_MAX_RPS": "200", "LOG_LEVEL": "INFO"}
    return subprocess.Popen([sys.executable, "watcher.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_standalone_watchers_take_over_when_the_holder_is_killed(client, auth, db, sim, database_url, strategy):
    if strategy == "blocks":
        pytest.skip("the leader lock does not depend on the strategy; checked once")
    first = watcher_process(database_url, sim.url)
    second = watcher_process(database_url, sim.url)
    try:
        p = create(client, auth, "10")
        pay(sim, WALLET, 10_000_000)
        assert wait_for(lambda: get(client, auth, p)["status"] == "completed")
        holder_pid = lock_holder_pid(db)
        assert holder_pid in (first.pid, second.pid)
        holder, standby = (first, second) if holder_pid == first.pid else (second, first)
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        assert wait_for(lambda: lock_holder_pid(db) == standby.pid, timeout=5)  # within a few intervals
        q = create(client, auth, "11")
        pay(sim, WALLET, 11_000_000)
        assert wait_for(lambda: get(client, auth, q)["status"] == "completed", timeout=10)
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(10) == 0
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # A cycle that read the solid head just before a payment's blocks were mined and solidified finds the transfer
    # above the head it read, and announces it; the next cycle credits it, and the announcement, never delivered,
    # is superseded. Credited once either way.
    for payment in (p, q):
        told = event_states(db, payment)
        assert [t for t, _ in told] in (["payment.completed"], ["payment.detected", "payment.completed"]), told
        assert all(state == "superseded" for t, state in told if t == "payment.detected"), told


def test_health_reports_the_watcher(client, auth, db, sim, watcher, strategy):
    create(client, auth, "10")
    watcher.run_once()
    health = client.get("/health").get_json()
    assert health["status"] == "healthy"
    assert health["watcher"]["strategy"] == strategy and health["watcher"]["last_cycle_at"]
    assert health["watcher"]["seconds_behind"] == 0
    sim.set_fault("503", count=None)
    watcher.run_once()
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and "503" in health["watcher"]["last_error"]
    watcher.run_once()  # the same trouble again: logged once, when it started
    sim.clear_faults()
    assert wait_for(lambda: watcher.client.paused_until is None, timeout=2)  # 503 pauses the upstream a moment
    watcher.run_once()
    assert client.get("/health").get_json()["status"] == "healthy"
    with db.Session() as s:
        kinds = list(s.scalars(select(PaymentLog.event_type).where(PaymentLog.payment_id.is_(None))
                               .order_by(PaymentLog.id)))
    assert kinds == ["watcher_error", "watcher_recovered"]


def test_idle_account_watcher_sends_nothing_upstream(new_watcher, db, sim, watch_config, strategy):
    if strategy == "blocks":
        pytest.skip("the blocks strategy keeps its block cursor moving while idle")
    idle = new_watcher(watch_config)
    try:
        assert idle.run_once().requests == 0
        assert sim.count("/") == 0
    finally:
        idle.stop()


# --- The accepted solid head: one answer from a node far behind must not lock the watcher out of the true chain ---

BLOCK_SECONDS = 0.1  # the simulator below mines one block per 0.1 s of wall time: the head rules get that pace
LAG = 100  # a node 100 blocks behind (five minutes on mainnet), e.g. one resyncing after its restart


def mine_in_pace(sim: Simulator, blocks: int) -> None:
    """Let the wall clock pass as the chain produces `blocks` blocks at BLOCK_SECONDS each."""
    time.sleep(blocks * BLOCK_SECONDS)
    sim.mine(blocks)


def test_a_head_from_a_node_far_behind_does_not_lock_out_every_later_head(new_watcher, client, auth, db, sim, config,
                                                                           strategy) -> None:
    """The first head accepted after a start comes from a node 100 blocks behind; the true heads that follow must be
    believed (a restart after a downtime, with chain time following the wall clock, is checked by the arithmetic in
    test_chain_view: this simulator's chain time runs thirty times faster than the wall clock here)."""
    cfg: Config = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy=strategy, trongrid_max_rps=500.0,
                                        tron_block_seconds=BLOCK_SECONDS, upstream_clock_skew_seconds=3600.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "17")
    sim.set_node_lag(1.0, LAG)  # the first answer after the (re)start comes from the node behind
    watcher.run_once()
    sim.set_node_lag(0.0, 0)  # that node caught up (or left the pool): every answer is the true head from now on
    pay(sim, WALLET, 17_000_000)
    for _ in range(8):  # the chain goes on at its pace, the watcher every 0.3 s
        mine_in_pace(sim, 3)
        result = watcher.run_once()
        if get(client, auth, p)["status"] == "completed":
            break
    health = client.get("/health").get_json()
    assert get(client, auth, p)["status"] == "completed", (
        f"every true head refused since: {result.refused[-1:]}; /health {health['status']}, "
        f"seconds_behind {health['watcher']['seconds_behind']}")


def test_a_preferred_node_behind_the_others_neither_delays_detection_nor_hides_it(new_watcher, client, auth, db,
                                                                                  sim, config, strategy) -> None:
    """The operator's own node, listed first, runs 40 blocks (two minutes) behind TronGrid, listed second. Its head
    is plausible every cycle (never below the last one), so it is the only one asked: every payment waits for that
    node, and /health says healthy, 0 s and 0 blocks behind, measured against that same head."""
    node = sim.replica(v1_api=strategy == "account")
    node.set_node_lag(1.0, 40)
    cfg: Config = config.with_overrides(trongrid_api_url=f"{node.url},{sim.url}", watcher_strategy=strategy,
                                        trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "18")
    watcher.run_once()
    pay(sim, WALLET, 18_000_000)
    for _ in range(3):
        watcher.run_once()
    health = client.get("/health").get_json()
    assert get(client, auth, p)["status"] == "completed", (
        f"/health {health['status']}, seconds_behind {health['watcher']['seconds_behind']}, "
        f"blocks_behind {health['watcher']['blocks_behind']}, true solid head {sim.state()['solid_head']}")


# --- A rate-limit answer names its own pause: an absurd one must not break /health nor the watcher's report ---

@pytest.mark.parametrize("retry_after", [1e20, float("inf")], ids=["1e20", "inf"])
def test_an_absurd_retry_after_is_reported_not_fatal(new_watcher, client, auth, db, sim: Simulator, config: Config,
                                                     retry_after: float) -> None:
    """`Retry-After: 100000000000000000000` pauses the upstream until a date no datetime holds, and /health answers
    500 from then on (a load balancer takes the instance out); `Retry-After: inf` makes every report fail to store
    (PostgreSQL's json has no Infinity), so /health keeps showing the last cycle before the pause as healthy. Both
    pauses are forever for a single upstream, until a restart."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    create(client, auth, "5")
    watcher.run_once()
    sim.set_fault("503", count=1, retry_after=retry_after)
    try:
        watcher.run_once()
    except Exception as exc:
        pytest.fail(f"the cycle's report failed: {type(exc).__name__}: {str(exc)[:120]}")
    health = client.get("/health")
    assert health.status_code == 200, health.get_json()
    body = health.get_json()
    assert body["status"] == "degraded" and "503" in body["watcher"]["last_error"], body["watcher"]
    if retry_after == 1e20:  # a number: believed up to the longest pause any answer can impose, an hour
        upstream = body["watcher"]["upstreams"][0]
        paused_until = datetime.fromisoformat(upstream["paused_until"].replace("Z", "+00:00")).timestamp()
        assert upstream["state"] == "paused" and paused_until <= time.time() + PAUSE_CAP_SECONDS + 5
    # "inf" is no number of seconds nor an HTTP date: the header is ignored, the usual short pause applies


# --- /health speaks its own words ------------------------------------------------------------------

class EchoingUpstream:
    """An upstream that refuses every call and echoes the request's path in its answer, as providers that put the
    API key in the URL path do (QuickNode, GetBlock): an HTTP 401 with the path in its text, or an HTTP 200
    `{"Error": ...}` quoting it."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's names)
                if "/SECRETKEYBBB" in self.path:
                    body, status = f'{{"Error": "invalid token in {self.path}"}}'.encode(), 200
                else:
                    body, status = f"401 Unauthorized: no such endpoint {self.path}".encode(), 401
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_health_shows_no_upstream_text_and_names_each_upstream(client, auth, config, new_watcher):
    upstream = EchoingUpstream()
    try:
        cfg = config.with_overrides(trongrid_api_url=f"{upstream.base}/SECRETKEYAAA,{upstream.base}/SECRETKEYBBB",
                                    watcher_strategy="blocks")
        create(client, auth, "5")
        new_watcher(cfg).run_once()
    finally:
        upstream.close()
    health = client.get("/health")
    watcher_part = health.get_json()["watcher"]
    assert health.get_json()["status"] == "degraded" and watcher_part["last_error"]
    names = [u["url"] for u in watcher_part["upstreams"]]
    host = upstream.base.split("//")[1]
    assert len(set(names)) == 2 and [name.endswith(("#1", "#2")) for name in names] == [True, True], names
    assert all(host in name for name in names)
    assert all(u["state"] == "failing" and u["last_error"] for u in watcher_part["upstreams"])
    metrics_text = client.get("/metrics").get_data(as_text=True)
    for shown in (health.get_data(as_text=True), metrics_text):
        assert "SECRETKEY" not in shown and "Unauthorized" not in shown and "invalid token" not in shown
    assert f'upstream="{names[0]}"' in metrics_text and f'upstream="{names[1]}"' in metrics_text


def test_idle_cycles_are_debug_and_summed_up_every_five_minutes(caplog) -> None:
    """A cycle a second in the sandbox: idle ones stay out of an INFO log but for one summary line every 300 s; a
    cycle that saw anything is an INFO line of its own."""
    import logging

    from chain.scanning import CycleResult
    from watcher import SUMMARY_SECONDS, CycleLog

    now = [0.0]
    log = CycleLog(clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="watcher"):
        for _ in range(299):
            now[0] += 1.0
            log.log(CycleResult("account", requests=2))
        assert caplog.records == []
        log.log(CycleResult("blocks", wallets=1, transfers_seen=1, credited=1))
        now[0] += 1.0
        log.log(CycleResult("account", requests=2))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("watcher cycle: blocks, 1 wallets, 1 transfers (1 credited")
    assert lines[1].startswith(f"watcher: 301 cycles in the last {SUMMARY_SECONDS:.0f} s (300 idle), 1 transfers, "
                               "600 upstream requests") and len(lines) == 2
