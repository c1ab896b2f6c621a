"""The blocks strategy (solidified blocks' receipts): catch-up, internal calls, auto switching, java-tron nodes."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from infra.config import Config
from models import Transfer, WalletCursor, WebhookEvent
from tests.conftest import PAYER, USDT, WALLET, WALLET_B, create, events, get, pass_time, pay
from tron_sim import Simulator, random_address


@pytest.fixture
def blocks_config(config: Config, sim: Simulator) -> Config:
    return config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=1000.0,
                                 polling_interval_seconds=0.2)


def completed_events(db) -> int:
    with db.Session() as s:
        return s.scalar(select(func.count()).where(WebhookEvent.type == "payment.completed")) or 0


def test_catches_up_after_1000_missed_blocks_oldest_first(new_watcher, client, auth, db, sim, blocks_config):
    watcher = new_watcher(blocks_config)
    wallets = [random_address() for _ in range(20)]
    payments = [create(client, auth, "5", wallet=w) for w in wallets]
    watcher.run_once()  # the cursor is set; then the watcher is "down" for 1,000 blocks
    for i in range(1000):
        if i % 50 == 0:
            sim.transfer(wallets[i // 50], 5_000_000, from_=PAYER)
        sim.transfer(random_address(), 1_000_000, from_=PAYER)  # someone else's USDT: most of the chain
        sim.mine(1)
    sim.mine(3)
    result = watcher.run_once()
    budget = watcher.blocks.budget()  # the rate over one interval, less the reconciliation's fifth
    # One cycle's request budget, no more: the head, a receipts call per block, and getblockbynum for the two
    # empty blocks the simulator started with.
    assert result.requests - result.sweep_requests == budget and result.blocks == budget - 3
    assert result.blocks_behind > 0
    health = client.get("/health").get_json()
    assert health["watcher"]["blocks_behind"] == result.blocks_behind
    cycles = 1
    while result.blocks_behind:
        result = watcher.run_once()
        cycles += 1
        assert cycles < 30
    assert cycles >= 1000 // budget
    assert all(get(client, auth, p)["status"] == "completed" for p in payments)
    assert completed_events(db) == 20
    with db.Session() as s:  # only transfers to watched wallets are kept
        assert s.scalar(select(func.count()).select_from(Transfer)) == 20

def test_transfer_made_by_an_internal_call_is_found(new_watcher, client, auth, db, sim, blocks_config):
    watcher = new_watcher(blocks_config)
    p = create(client, auth, "12")
    watcher.run_once()
    tx = pay(sim, WALLET, 12_000_000, internal=True)
    watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "completed" and got["transaction_hash"] == tx
    assert got["transfers"][0]["log_index"] == 1  # the calling contract's own log comes first

def test_java_tron_node_without_v1_api_uses_blocks(new_watcher, client, auth, db, config):
    node = Simulator(block_interval=0, solidify_depth=2, usdt_contract=USDT, v1_api=False, follow_clock=True)
    node.start()
    try:
        cfg = config.with_overrides(trongrid_api_url=node.url, watcher_strategy="auto", trongrid_max_rps=1000.0)
        watcher = new_watcher(cfg)
        p = create(client, auth, "3")
        assert watcher.run_once().strategy == "blocks"
        pay(node, WALLET, 3_000_000)
        assert watcher.run_once().strategy == "blocks"
        assert get(client, auth, p)["status"] == "completed"
        assert node.count("/v1/") <= 1  # the probe only
        watcher.stop()
    finally:
        node.stop()


def test_auto_switches_both_ways_without_losing_or_double_crediting(new_watcher, client, auth, db, sim, config):
    # budget = 100 rps * 0.05 s = 5 requests a cycle: blocks above 3.5 wallets, account again below 2. No late
    # window: a wallet whose payment completed is no longer watched once read past the completion.
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="auto", trongrid_max_rps=100.0,
                                polling_interval_seconds=0.05, late_payment_window_seconds=0)
    watcher = new_watcher(cfg)
    first = create(client, auth, "1", wallet=WALLET)
    assert watcher.run_once().strategy == "account"
    many = [create(client, auth, "2", wallet=random_address()) for _ in range(4)]
    pay(sim, WALLET, 400_000)  # partial payment just before the switch
    seen = [watcher.run_once().strategy]
    pay(sim, WALLET, 300_000)
    for p in many:
        pay(sim, p["wallet_address"], 2_000_000)
    for _ in range(60):  # 4 blocks a cycle: catching up from the oldest wallet cursor takes a while
        result = watcher.run_once()
        seen.append(result.strategy)
        if result.strategy == "blocks" and result.blocks_behind == 0:
            break
    assert seen[-1] == "blocks"
    assert all(get(client, auth, p)["status"] == "completed" for p in many)
    # 5 wallets dropped to 1: back to account (hysteresis), and the rest of the first payment arrives
    pay(sim, WALLET, 300_000)
    after = [watcher.run_once().strategy for _ in range(3)]
    assert after[-1] == "account"
    got = get(client, auth, first)
    assert got["status"] == "completed" and got["received_amount_usdt"] == "1" and len(got["transfers"]) == 3
    with db.Session() as s:
        assert s.scalar(select(func.count()).select_from(Transfer)) == 7  # each transfer once
        kinds = list(s.scalars(select(WebhookEvent.type).where(WebhookEvent.payment_id == uuid.UUID(first["id"]))
                               .order_by(WebhookEvent.seq)))
    assert kinds == ["payment.partial", "payment.partial", "payment.completed"]

def test_auto_does_not_flap_at_the_threshold(new_watcher, client, auth, db, sim, config):
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="auto", trongrid_max_rps=100.0,
                                polling_interval_seconds=0.05)
    watcher = new_watcher(cfg)
    for _ in range(3):  # 3 wallets: between the two thresholds (2 and 3.5)
        create(client, auth, "2", wallet=random_address())
    strategies = [watcher.run_once().strategy for _ in range(3)]
    assert strategies == ["account"] * 3
    create(client, auth, "2", wallet=random_address())  # 4 > 3.5: blocks
    assert watcher.run_once().strategy == "blocks"
    assert watcher.run_once().strategy == "blocks"

def test_blocks_expire_by_chain_time(new_watcher, client, auth, db, sim, blocks_config):
    watcher = new_watcher(blocks_config)
    p = create(client, auth, "9", expires_in_seconds=60, wallet=WALLET_B)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"
    pass_time(sim, 61)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "expired"


def test_a_wallet_reused_after_a_month_is_not_read_back_a_month(new_watcher, client, auth, db, sim, blocks_config):
    create(client, auth, "3")
    head = sim.chain.head
    with db.transaction() as s:
        s.add(WalletCursor(chain=blocks_config.chain_key, wallet_address=WALLET,
                           last_checked_timestamp=head.timestamp - 30 * 86400 * 1000))
    watcher = new_watcher(blocks_config)
    with db.Session() as s:
        wallets = watcher.view.watched_wallets(s)
    watcher.blocks.seed(head.number, head.timestamp, wallets)
    with db.Session() as s:
        cursor = watcher.view.state(s, "block_cursor")
    assert head.number - cursor["number"] < 100  # the new payment's creation, not the month-old cursor


# --- A switch to the blocks strategy starts where the account strategy stopped, whatever node answers the search ---

def test_the_block_cursor_search_never_lands_after_unread_blocks(new_watcher, client, auth, db, sim: Simulator,
                                                                 config: Config) -> None:
    """The operator's own java-tron node, listed first, is 120 blocks behind after a restart. Its head is refused
    (below the last accepted one) and TronGrid's is accepted; the search for the block cursor then asks the node,
    whose `{}` for a block more than 30 below the accepted head counts as "older than the target". The cursor lands
    about 31 blocks under the head, far after where the account strategy stopped: the blocks between are never read
    by the scan, and the payment paid in them expires (reconciliation reopens it later)."""
    account = new_watcher(config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="account",
                                                trongrid_max_rps=500.0))
    p = create(client, auth, "14", expires_in_seconds=60)
    account.run_once()  # the wallet is read up to the watermark; a true head is accepted
    account.stop()
    tx = pay(sim, WALLET, 14_000_000)  # mined at once, on time
    sim.mine(105)  # five minutes of chain pass before the service comes back with the blocks strategy
    node = sim.replica(v1_api=False)
    node.set_node_lag(1.0, 120)
    blocks = new_watcher(config.with_overrides(trongrid_api_url=f"{node.url},{sim.url}", watcher_strategy="blocks",
                                               trongrid_max_rps=500.0))
    blocks.run_once()
    with db.Session() as s:
        found_by = s.scalars(select(Transfer.found_by).where(Transfer.transaction_hash == tx)).one_or_none()
    assert found_by == "scan" and events(db, p) == ["payment.completed"], (
        f"block {sim.tx_block(tx)} with the payment found by {found_by}; events {events(db, p)}; "
        f"status {get(client, auth, p)['status']}")
