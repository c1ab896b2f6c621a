"""Reconciliation: the second look credits what the scan missed, through another upstream, within its budget."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from infra.config import Config
from models import PaymentLog, Transfer
from tests.conftest import PAYER, WALLET, create, events, get, pay
from tron_sim import Simulator, random_address


def account_config(config: Config, url: str, **changes: object) -> Config:
    settings: dict[str, object] = {"trongrid_api_url": url, "watcher_strategy": "account", "trongrid_max_rps": 500.0,
                                   "reconcile_interval_seconds": 1.0}
    return config.with_overrides(**{**settings, **changes})


def test_a_transfer_the_index_lists_after_the_overlap_is_credited_by_reconciliation(new_watcher, client, auth, db,
                                                                                     sim, config):
    watcher = new_watcher(account_config(config, sim.url))
    p = create(client, auth, "21")
    tx = sim.transfer(WALLET, 21_000_000, from_=PAYER)
    sim.delay_in_index(tx, 600)  # listed ten minutes after its block, far past the 60 s overlap
    sim.solidify()
    for _ in range(3):
        sim.mine(20)  # the watermark and the wallet cursor move past the transfer's block
        watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"
    sim.advance(600)
    sim.mine(3)  # the index lists it now, ten minutes of chain time behind the cursor
    for _ in range(3):
        time.sleep(0.4)  # a new pass of the sweep is due every second here
        watcher.run_once()
    got = get(client, auth, p)
    assert got["status"] == "completed" and got["transaction_hash"] == tx and events(db, p) == ["payment.completed"]
    with db.Session() as s:
        assert s.scalars(select(Transfer.found_by)).one() == "reconciliation"
        messages = list(s.scalars(select(PaymentLog.message).where(PaymentLog.event_type == "transfer_seen")))
    assert any("found by reconciliation" in m for m in messages)
    assert client.get("/stats").get_json()["reconciled_transfers"] == 1
    health = client.get("/health").get_json()["watcher"]["reconciliation"]
    assert health["mode"] == "wallets" and health["last_complete_pass_age_seconds"] is not None


def test_the_sweep_reads_another_upstream_than_the_scan(new_watcher, client, auth, db, sim, config):
    second = sim.replica()  # e.g. a second TronGrid region
    watcher = new_watcher(account_config(config, f"{sim.url},{second.url}"))
    p = create(client, auth, "22")
    tx = sim.transfer(WALLET, 22_000_000, from_=PAYER)
    sim.delay_in_index(tx, 3600)  # the first upstream's index leaves it out for an hour
    sim.solidify()
    for _ in range(4):
        sim.mine(5)
        time.sleep(0.3)
        watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    with db.Session() as s:
        assert s.scalars(select(Transfer.found_by)).one() == "reconciliation"
    assert second.count("/v1/accounts/") >= 1  # the sweep asked the second upstream
    scan_listings = sim.count("/v1/accounts/")
    assert scan_listings >= 1 and sim.count("/walletsolidity/getnowblock") >= 1  # the scan stayed on the first


def test_the_sweep_takes_at_most_a_fifth_of_the_budget_and_a_pass_spans_cycles(new_watcher, client, auth, db, sim,
                                                                               config):
    cfg = account_config(config, sim.url, trongrid_max_rps=100.0, polling_interval_seconds=0.1,
                         reconcile_interval_seconds=0.1)  # budget 10 a cycle, the sweep's share 2
    watcher = new_watcher(cfg)
    wallets = [random_address() for _ in range(6)]
    for wallet in wallets:
        create(client, auth, "1", wallet=wallet)
    sim.mine(3)
    watcher.run_once()  # the scan reads every wallet once (cursors set); the sweep starts its pass
    swept = []
    for _ in range(6):
        before = watcher.reconciler.client.request_count
        watcher.run_once()
        swept.append(watcher.reconciler.client.request_count - before)
    assert max(swept) <= 2 and sum(swept) >= 6  # two wallets a cycle at most, every wallet in the end
    with db.Session() as s:
        progress = watcher.view.state(s, "reconcile")
    assert progress["last_complete_at"] is not None


def test_with_java_tron_nodes_only_the_sweep_rereads_recent_blocks_through_the_other_node(new_watcher, client, auth,
                                                                                         db, config):
    chain = Simulator(block_interval=0, solidify_depth=2, v1_api=False, follow_clock=True)
    chain.start()
    try:
        other = chain.replica(v1_api=False)
        cfg = config.with_overrides(trongrid_api_url=f"{chain.url},{other.url}", watcher_strategy="auto",
                                    trongrid_max_rps=500.0, reconcile_interval_seconds=1.0)
        watcher = new_watcher(cfg)
        p = create(client, auth, "23")
        pay(chain, WALLET, 23_000_000)
        result = watcher.run_once()
        assert result.strategy == "blocks" and get(client, auth, p)["status"] == "completed"
        assert other.count("/walletsolidity/gettransactioninfobyblocknum") >= 1  # the sweep's re-read
        with db.Session() as s:
            assert watcher.view.state(s, "reconcile")["mode"] == "blocks"
        single = new_watcher(config.with_overrides(trongrid_api_url=chain.url, watcher_strategy="blocks"))
        assert single.reconciler.mode() is None  # one node: the complete-block check is the only guard
    finally:
        chain.stop()


@pytest.mark.parametrize("strategy_name", ["account", "blocks"])
def test_the_sweep_credits_through_the_same_rules(new_watcher, client, auth, db, sim, config, strategy_name):
    """What the sweep finds is matched as the scan would have: two candidates, an unmatched amount stays unmatched,
    and later money still finds its payment."""
    cfg = account_config(config, sim.url).with_overrides(watcher_strategy=strategy_name)
    watcher = new_watcher(cfg)
    a = create(client, auth, "5")
    create(client, auth, "6")
    odd = sim.transfer(WALLET, 1_000_000, from_=PAYER)
    sim.delay_in_index(odd, 600)
    sim.solidify()
    for _ in range(2):
        sim.mine(25)  # the cursors move more than the overlap past it
        watcher.run_once()
    sim.advance(600)
    sim.mine(3)
    for _ in range(4):
        time.sleep(0.4)  # a new pass of the sweep is due every second here
        watcher.run_once()
    with db.Session() as s:
        rows = list(s.scalars(select(Transfer)))
    if strategy_name == "account":  # the blocks strategy never missed it: nothing for the sweep to find
        found = [(r.transaction_hash, r.status.value, r.found_by) for r in rows]
        assert found == [(odd, "unmatched", "reconciliation")]
    pay(sim, WALLET, 5_000_000)
    watcher.run_once()
    assert get(client, auth, a)["status"] == "completed"


def test_a_pass_keeps_pace_with_the_reconcile_interval(new_watcher, client, auth, db, sim, config):
    """With budget to spare, a pass over W wallets spreads over RECONCILE_INTERVAL_SECONDS and ends on time."""
    cfg = account_config(config, sim.url, polling_interval_seconds=0.2, reconcile_interval_seconds=2.0)
    watcher = new_watcher(cfg)
    for _ in range(20):
        create(client, auth, "1", wallet=random_address())
    sim.mine(3)
    started = time.monotonic()
    swept = [watcher.run_once().swept]  # every wallet read once (cursors set); the pass starts
    while time.monotonic() - started < 4.0:
        cycle_start = time.monotonic()
        result = watcher.run_once()
        swept.append(result.swept)
        if result.passes:
            break
        time.sleep(max(0.0, 0.2 - (time.monotonic() - cycle_start)))
    elapsed = time.monotonic() - started
    assert sum(swept) == 20 and 1.0 <= elapsed <= 3.0, (swept, elapsed)  # paced, not all at once, and on time
    assert max(swept) <= 5


# --- Reconciliation passes: a pass ends, whatever happens to the set of watched wallets meanwhile ---

def test_a_pass_completes_when_a_swept_wallet_stops_being_watched(new_watcher, client, auth, db, sim: Simulator,
                                                                  config: Config) -> None:
    """The pass counts the wallets it has swept (`done`) against how many are watched now: once a wallet it swept
    leaves the set (its payment completed) the count can never be reached, the pass never completes, no new one
    starts, and a transfer the index listed late on a wallet after it is never credited."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="account", trongrid_max_rps=500.0,
                                polling_interval_seconds=0.2, reconcile_interval_seconds=2.0)
    watcher = new_watcher(cfg)
    first, second, third = sorted(random_address() for _ in range(3))  # the sweep goes in address order
    leaving = create(client, auth, "5", wallet=first)
    create(client, auth, "6", wallet=second)
    late = create(client, auth, "7", wallet=third)
    tx = sim.transfer(third, 7_000_000, from_=PAYER)
    sim.delay_in_index(tx, 600)  # listed ten minutes after its block: only the sweep can find it
    sim.solidify()
    sim.mine(25)  # the scan's cursors move more than the overlap past it
    watcher.run_once()  # the scan reads all three; the pass starts with the first wallet (a third of 2 s is due)
    pay(sim, first, 5_000_000)
    watcher.run_once()
    assert get(client, auth, leaving)["status"] == "completed"  # the first wallet has no candidate left
    sim.advance(600)
    sim.mine(3)  # the index lists the late transfer now
    started = time.monotonic()
    while time.monotonic() - started < 4.0 and get(client, auth, late)["status"] != "completed":
        time.sleep(0.2)
        watcher.run_once()
    with db.Session() as s:
        progress = watcher.view.state(s, "reconcile")
    assert get(client, auth, late)["status"] == "completed", f"after two reconcile intervals: {progress}"
