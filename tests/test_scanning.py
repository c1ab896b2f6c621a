"""Both strategies against the real TronGrid's ways: nodes behind the others, a lagging index, lying heads, answers
that drip or never end, transfers that cannot be credited, listings without token info, several upstreams."""
from __future__ import annotations

import socket
import time
import uuid

import pytest
from sqlalchemy import func, select

import scanning
from chain_view import ChainView
from config import Config
from models import Payment, PaymentLog, RejectedTransfer, Transfer, WalletCursor
from tests.conftest import PAYER, WALLET, WALLET_B, create, events, get, log_types, pay
from tron_client import TronClient
from tron_sim import Simulator


def reading(config: Config, upstreams: str, strategy: str, **overrides: object) -> Config:
    """The test configuration reading `upstreams` with `strategy`, at a rate the simulator takes."""
    return config.with_overrides(trongrid_api_url=upstreams, watcher_strategy=strategy, trongrid_max_rps=500.0,
                                 **overrides)


def cursors_within_the_true_head(db, sim: Simulator, cfg: Config) -> None:
    """No cursor, and no accepted head, beyond what the chain really has solidified."""
    state = sim.state()
    view = ChainView(cfg)
    with db.Session() as s:
        head = view.accepted_head(s)
        block = view.state(s, "block_cursor")
        wallets = list(s.scalars(select(WalletCursor.last_checked_timestamp).where(WalletCursor.chain == view.chain)))
    assert head is None or (head.number <= state["solid_head"] and head.timestamp <= state["solid_timestamp"])
    assert block is None or (block["number"] <= state["solid_head"] and block["timestamp"] <= state["solid_timestamp"])
    assert all(ts <= state["solid_timestamp"] for ts in wallets)


# -- nodes behind the others ---------------------------------------------------------------------------------
def test_a_block_a_lagging_node_answers_empty_is_never_skipped(new_watcher, client, auth, db, sim, config):
    """A node that has not reached block N answers [] for it: the blocks strategy asks again, never moves past."""
    cfg = reading(config, sim.url, "blocks")
    watcher = new_watcher(cfg)
    p = create(client, auth, "6")
    watcher.run_once()
    tx = pay(sim, WALLET, 6_000_000)
    block = sim.tx_block(tx)
    sim.set_node_lag(1.0, 20, seed=1)  # every answer from a node 20 blocks behind
    for _ in range(3):
        watcher.run_once()
        with db.Session() as s:
            assert watcher.view.state(s, "block_cursor")["number"] < block
    assert get(client, auth, p)["status"] == "pending"
    sim.set_node_lag(0.3, 20, seed=2)  # a pool: most answers from nodes that are up to date
    for _ in range(10):
        watcher.run_once()
        if get(client, auth, p)["status"] == "completed":
            break
    assert get(client, auth, p)["status"] == "completed" and events(db, p) == ["payment.completed"]
    cursors_within_the_true_head(db, sim, cfg)


def test_an_empty_block_is_believed_only_when_getblockbynum_shows_it_empty(new_watcher, db, config):
    quiet = Simulator(block_interval=0, solidify_depth=2, usdt_noise_per_block=0, follow_clock=True)
    quiet.start()
    try:
        node = new_watcher(reading(config, quiet.url, "blocks"))
        head = quiet.mine(1)
        quiet.mine(2)  # solidified
        latest = quiet.state()["solid_timestamp"]
        assert node.blocks.read_block(head, latest) is not None and node.blocks.read_block(head, latest)[1] == []
        assert quiet.count("/walletsolidity/getblockbynum") >= 1  # [] was checked before it was believed
        quiet.set_node_lag(1.0, 20, seed=3)
        newest = quiet.mine(3)
        assert node.blocks.read_block(newest - 2, quiet.state()["solid_timestamp"]) is None  # not yet: a node behind
    finally:
        quiet.stop()


def test_a_receipt_a_lagging_node_does_not_have_is_asked_again(new_watcher, client, auth, db, sim, config):
    cfg = reading(config, sim.url, "account")
    watcher = new_watcher(cfg)
    p = create(client, auth, "2")
    pay(sim, WALLET, 2_000_000)
    sim.set_node_lag(1.0, 20, seed=4)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"  # the listing shows it, every node asked lacks it
    sim.set_node_lag(0.3, 20, seed=5)
    for _ in range(5):
        watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


# -- the /v1 index lags --------------------------------------------------------------------------------------
def test_a_transfer_the_index_lists_90s_late_is_credited_and_nothing_expires_early(new_watcher, client, auth, db,
                                                                                   sim, config):
    cfg = reading(config, sim.url, "account")
    watcher = new_watcher(cfg)
    sim.set_index_lag(90)
    paid = create(client, auth, "7", expires_in_seconds=60)
    quiet = create(client, auth, "8", wallet=WALLET_B, expires_in_seconds=60)
    watcher.run_once()
    pay(sim, WALLET, 7_000_000)  # mined before expiry
    sim.advance(45)
    for _ in range(30):  # chain time passes expiry; the index shows the transfer 90 s after its block
        sim.mine(5)
        watcher.run_once()
        assert get(client, auth, quiet)["status"] == "pending" or expired_after_its_time(db, quiet)
        if get(client, auth, quiet)["status"] == "expired" and get(client, auth, paid)["status"] == "completed":
            break
    got = get(client, auth, paid)
    assert got["status"] == "completed" and got["paid_late"] is False
    assert get(client, auth, quiet)["status"] == "expired" and expired_after_its_time(db, quiet)
    cursors_within_the_true_head(db, sim, cfg)


def expired_after_its_time(db, payment: dict) -> bool:
    """The payment expired on a read that had really reached its expiry in chain time."""
    with db.Session() as s:
        row = s.get(Payment, uuid.UUID(payment["id"]))
        log = s.scalars(select(PaymentLog).where(PaymentLog.payment_id == row.id,
                                                  PaymentLog.event_type == "expired")).one_or_none()
    return log is not None and log.event_metadata["read_up_to"] >= int(row.expires_at.timestamp() * 1000)


# -- lying heads ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lie, param", [("head_future", {}), ("head_ahead", {"blocks": 300})])
def test_a_lying_solid_head_is_refused_and_shown(new_watcher, client, auth, db, sim, config, strategy, lie, param):
    cfg = reading(config, sim.url, strategy, tron_block_seconds=3.0, upstream_clock_skew_seconds=600.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "9", expires_in_seconds=3600)
    other = create(client, auth, "4", wallet=WALLET_B)
    watcher.run_once()
    sim.set_fault(lie, count=3, **param)  # every answer of this cycle lies
    result = watcher.run_once()
    assert result.refused and "refused" in result.refused[0]
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and sim.url.split("//")[1] in health["watcher"]["last_error"]
    assert "ahead" in health["watcher"]["last_error"] or "jumped" in health["watcher"]["last_error"]
    assert WALLET not in str(health) and WALLET_B not in str(health)
    cursors_within_the_true_head(db, sim, cfg)
    assert get(client, auth, p)["status"] == "pending" and get(client, auth, other)["status"] == "pending"
    assert events(db, p) == [] and events(db, other) == []  # nothing expired by the lie
    pay(sim, WALLET, 9_000_000)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    assert client.get("/health").get_json()["status"] == "healthy"


# -- transfers that cannot be credited -----------------------------------------------------------------------
def test_an_amount_out_of_range_is_rejected_and_the_cycle_goes_on(client, auth, db, sim, watcher, strategy):
    p = create(client, auth, "5")
    huge = sim.transfer(WALLET, 10**30, from_=PAYER)  # fits a uint256, not NUMERIC(20,6)
    zero = sim.transfer(WALLET, 0, from_=PAYER)  # address-poisoning spam
    good = pay(sim, WALLET, 5_000_000)
    for _ in range(3):
        result = watcher.run_once()
        assert result is not None
    got = get(client, auth, p)
    assert got["status"] == "completed" and got["transaction_hash"] == good
    with db.Session() as s:
        rejected = {r.transaction_hash: r for r in s.scalars(select(RejectedTransfer))}
        stored = s.scalar(select(func.count()).select_from(Transfer))
    assert set(rejected) == {huge, zero} and stored == 1
    assert "above the largest" in rejected[huge].reason and rejected[huge].amount_raw == str(10**30)
    assert "zero amount" in rejected[zero].reason
    assert client.get("/stats").get_json()["rejected_transfers"] == 2
    with db.Session() as s:
        notes = list(s.scalars(select(PaymentLog.message).where(PaymentLog.event_type == "transfer_rejected")))
    assert len(notes) == 2  # once each, although the account overlap lists them again


@pytest.mark.parametrize("malformed", ["data", "short", "topics"])
def test_a_malformed_transfer_log_is_rejected_alone(client, auth, db, sim, watcher, malformed):
    p = create(client, auth, "3")
    bad = sim.transfer(WALLET, 3_000_000, from_=PAYER, malformed=malformed)
    good = sim.transaction([{"to": WALLET_B, "amount": 1_000_000, "from": PAYER}])
    create(client, auth, "1", wallet=WALLET_B)
    sim.solidify()
    watcher.run_once()
    with db.Session() as s:
        rows = s.scalars(select(RejectedTransfer).where(RejectedTransfer.transaction_hash == bad))
        reasons = [r.reason for r in rows]
        stored = list(s.scalars(select(Transfer.transaction_hash)))
    assert len(reasons) == 1 and reasons[0].startswith("malformed Transfer log")
    assert stored == [good] and get(client, auth, p)["status"] == "pending"


def test_a_listing_record_without_token_info_is_decided_by_its_receipt(new_watcher, client, auth, db, sim, config):
    cfg = reading(config, sim.url, "account")
    watcher = new_watcher(cfg)
    a = create(client, auth, "11")
    b = create(client, auth, "12", wallet=WALLET_B)
    tx = sim.transfer(WALLET, 11_000_000, from_=PAYER, index_token_info=False)
    sim.approve(PAYER, WALLET_B, 12_000_000)  # an Approval record is not money
    sim.solidify()
    watcher.run_once()
    assert get(client, auth, a)["status"] == "completed" and get(client, auth, a)["transaction_hash"] == tx
    assert get(client, auth, b)["status"] == "pending"
    sim.set_fault("blank_token_info", count=None)  # every record of a page without token info
    pay(sim, WALLET_B, 12_000_000)
    watcher.run_once()
    assert get(client, auth, b)["status"] == "completed"


# -- answers that never end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["drip", "endless", "huge"])
def test_a_hostile_answer_costs_one_deadline_at_most(new_watcher, client, auth, db, sim, config, strategy, kind):
    cfg = reading(config, sim.url, strategy, trongrid_timeout_seconds=0.5)
    client_ = TronClient(cfg.trongrid_api_url, cfg.usdt_contract, max_rps=500.0, timeout=0.5, max_retries=1,
                         backoff_base=0.01, backoff_cap=0.02, max_bytes=1_000_000)
    watcher = new_watcher(cfg, client_)
    p = create(client, auth, "13")
    watcher.run_once()
    pay(sim, WALLET, 13_000_000)
    prefix = "/v1/accounts/" if strategy == "account" else "/walletsolidity/gettransactioninfobyblocknum"
    sim.set_fault(kind, count=1, path_prefix=prefix, seconds=0.2, size=5_000_000)
    started = time.monotonic()
    watcher.run_once()
    assert time.monotonic() - started < 0.5 * 2 + 1.0  # one deadline, one retry, the rest of the cycle
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


# -- several upstreams ---------------------------------------------------------------------------------------
def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_calls_fail_over_to_the_next_upstream_and_health_names_the_failing_one(new_watcher, client, auth, sim,
                                                                               config, strategy):
    cfg = reading(config, f"{dead_url()},{sim.url}", strategy)
    watcher = new_watcher(cfg)
    p = create(client, auth, "14")
    pay(sim, WALLET, 14_000_000)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    health = client.get("/health").get_json()
    states = {u["url"]: u["state"] for u in health["watcher"]["upstreams"]}
    assert list(states.values()) == ["failing", "ok"] and health["status"] == "degraded"


def test_auto_counts_only_upstreams_with_v1_and_the_node_serves_the_blocks(new_watcher, client, auth, db, sim, config):
    node = sim.replica(v1_api=False)  # the operator's own java-tron node, listed first
    cfg = reading(config, f"{node.url},{sim.url}", "auto")
    watcher = new_watcher(cfg)
    p = create(client, auth, "15")
    pay(sim, WALLET, 15_000_000)
    result = watcher.run_once()
    assert result.strategy == "account" and get(client, auth, p)["status"] == "completed"
    assert node.count("/v1/accounts/") == 0 and sim.count("/v1/accounts/") >= 1  # /v1 only where it exists
    assert node.count("/walletsolidity/getnowblock") >= 1  # the first upstream serves what it can


# -- one database transaction per chain transaction; a failed transaction is read once ----------------------

def test_a_crash_between_two_logs_of_one_transaction_loses_neither(new_watcher, client, auth, db, sim, config,
                                                                  monkeypatch):
    create(client, auth, "1.5")
    b = create(client, auth, "2.5")
    sim.transaction([{"to": WALLET, "amount": 1_500_000, "from": PAYER},
                     {"to": WALLET, "amount": 2_500_000, "from": PAYER}])
    sim.solidify()
    watcher = new_watcher(reading(config, sim.url, "account"))
    real = scanning.credit_transfer
    failures = []

    def crash_once_on_the_second_log(session, transfer, late, found_by):  # type: ignore[no-untyped-def]
        if transfer.log_index == 1 and not failures:
            failures.append(transfer)
            raise RuntimeError("the process dies between the two logs")
        return real(session, transfer, late, found_by)

    monkeypatch.setattr(scanning, "credit_transfer", crash_once_on_the_second_log)
    crashed = watcher.run_once()  # the cycle ends there, reported; the loop goes on
    assert crashed.errors == ["cycle failed: RuntimeError: the process dies between the two logs"]
    watcher.run_once()
    with db.Session() as s:
        assert sorted(s.scalars(select(Transfer.log_index))) == [0, 1]
    assert get(client, auth, b)["status"] == "completed"



def test_a_failed_transaction_is_fetched_and_logged_once(new_watcher, client, auth, db, sim, config):
    watcher = new_watcher(reading(config, sim.url, "account"))
    p = create(client, auth, "4")
    pay(sim, WALLET, 4_000_000, reverted=True)
    for _ in range(4):  # the 60 s overlap lists it again every cycle
        watcher.run_once()
    assert log_types(client, auth, p).count("transfer_rejected") == 1
    assert sim.count("/walletsolidity/gettransactioninfobyid") == 1

