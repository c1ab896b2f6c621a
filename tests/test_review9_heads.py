"""The accepted solid head: one answer from a node far behind must not lock the watcher out of the true chain."""
from __future__ import annotations

import time

from config import Config
from tests.conftest import WALLET, create, get, pay
from tron_sim import Simulator

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
