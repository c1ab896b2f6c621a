"""Request budgets: what one cycle sends to an upstream, counted by the upstream itself.

A reader's budget is its share of TRONGRID_MAX_RPS over one interval (the sweep's share a fifth). Every request a
cycle sends counts against it, whichever view of the client sent it: heads, blocks and receipts included."""
from __future__ import annotations

from config import Config
from tests.conftest import WALLET, create
from tron_sim import Simulator, random_address


def test_the_block_sweep_takes_at_most_a_fifth_of_the_budget_per_cycle(new_watcher, db, config: Config) -> None:
    """java-tron nodes only: the sweep re-reads the blocks of the last RECONCILE_INTERVAL_SECONDS, a fifth of the
    budget per cycle. 100 rps over 0.5 s is 50 requests a cycle, the sweep's share 10."""
    chain = Simulator(block_interval=0, solidify_depth=2, v1_api=False, follow_clock=True)
    chain.start()
    try:
        other = chain.replica(v1_api=False)  # the sweep's upstream: the scan prefers the first one
        cfg = config.with_overrides(trongrid_api_url=f"{chain.url},{other.url}", watcher_strategy="blocks",
                                    trongrid_max_rps=100.0, polling_interval_seconds=0.5,
                                    reconcile_interval_seconds=300.0, tron_block_seconds=3.0)
        watcher = new_watcher(cfg)
        sweep_budget = watcher.reconciler.blocks.budget()
        assert sweep_budget == 10
        before = other.count("/")
        result = watcher.run_once()
        sent = other.count("/") - before
        assert sent <= sweep_budget + 2, (
            f"the sweep sent {sent} requests in one cycle ({result.swept} blocks, {result.seconds:.2f}s for a "
            f"{cfg.polling_interval_seconds}s interval); its share is {sweep_budget}; the cycle reported "
            f"{result.sweep_requests} sweep requests")
    finally:
        chain.stop()


def test_receipts_of_money_that_stays_unmatched_stop_at_the_cycle_budget(new_watcher, client, auth, db, sim,
                                                                         config: Config) -> None:
    """Address poisoning sends zero-amount "transfers" to any busy wallet. Receipts for money that would stay
    unmatched are fetched only while the cycle's budget lasts (README, the `account` strategy): 50 rps over 0.2 s
    is 10 requests a cycle, whatever lands on one wallet."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="account", trongrid_max_rps=50.0,
                                polling_interval_seconds=0.2)
    watcher = new_watcher(cfg)
    create(client, auth, "5")
    create(client, auth, "6")  # two open payments: spam matches neither
    for _ in range(30):
        sim.transfer(WALLET, 0, from_=random_address())
    sim.solidify()
    budget = int(cfg.trongrid_max_rps * cfg.polling_interval_seconds)
    before = sim.count("/")
    result = watcher.run_once()
    sent = sim.count("/") - before
    receipts = sim.count("/walletsolidity/gettransactioninfobyid")
    # head, watermark, listing and the sweep's listing besides the budget
    assert sent <= budget + 4, (f"one cycle sent {sent} requests ({receipts} receipts) for a budget of {budget}, "
                                f"in {result.seconds:.2f}s for a {cfg.polling_interval_seconds}s interval")


def test_empty_blocks_do_not_double_the_blocks_scan_budget(new_watcher, db, config: Config) -> None:
    """On a chain with empty blocks (Nile, Shasta, the sandbox) each block costs two requests ([] and the
    getblockbynum cross-check). The catch-up still sends one interval's budget per cycle, not twice that."""
    quiet = Simulator(block_interval=0, solidify_depth=2, v1_api=False, usdt_noise_per_block=0, follow_clock=True)
    quiet.start()
    try:
        cfg = config.with_overrides(trongrid_api_url=quiet.url, watcher_strategy="blocks", trongrid_max_rps=500.0,
                                    polling_interval_seconds=0.2)
        watcher = new_watcher(cfg)
        watcher.run_once()  # the block cursor is placed at the head
        quiet.mine(150)  # the watcher was away for 150 (empty) blocks
        budget = int(cfg.trongrid_max_rps * cfg.polling_interval_seconds)
        before = quiet.count("/")
        result = watcher.run_once()
        sent = quiet.count("/") - before
        assert sent <= budget + 1, f"one cycle sent {sent} requests ({result.blocks} blocks) for a budget of {budget}"
    finally:
        quiet.stop()


def test_the_cycle_reports_every_request_it_sent(new_watcher, db, sim, config: Config) -> None:
    """CycleResult.requests (the watcher's log line, and what metrics will count) is what the upstream received."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=500.0,
                                polling_interval_seconds=0.2)
    watcher = new_watcher(cfg)
    watcher.run_once()
    sim.mine(10)
    before = sim.count("/")
    result = watcher.run_once()
    assert result.requests == sim.count("/") - before, (result.requests, sim.count("/") - before)
