"""Reconciliation passes: a pass ends, whatever happens to the set of watched wallets meanwhile."""
from __future__ import annotations

import time

from config import Config
from tests.conftest import PAYER, create, get, pay
from tron_sim import Simulator, random_address


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
