"""The account strategy's watermark: expiry must wait until the listing that was read has shown the money."""
from __future__ import annotations

import time
from datetime import datetime

from config import Config
from tests.conftest import PAYER, WALLET, create, events, get, pay
from tron_sim import Simulator


def test_the_watermark_and_the_listing_come_from_the_same_upstream(new_watcher, client, auth, db, sim: Simulator,
                                                                   config: Config) -> None:
    """Two TronGrid upstreams, the second one's index five minutes late. The first answers the watermark, then fails
    the listing (HTTP 500 after the retries): the listing is read from the second, and the cursor and expiry move
    to the first one's watermark over a listing that has not reached it."""
    late = sim.replica()
    late.set_index_lag(300)
    cfg = config.with_overrides(trongrid_api_url=f"{sim.url},{late.url}", watcher_strategy="account",
                                trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "12", expires_in_seconds=60)
    pay(sim, WALLET, 12_000_000)  # mined at once, well before expires_at
    sim.advance(200)
    sim.mine(3)  # chain time is past expires_at: the payment is paid, on time
    sim.set_fault("500", count=3, path_prefix="/v1/accounts/")  # the first upstream fails this cycle's listing
    watcher.run_once()
    assert "payment.expired" not in events(db, p), (events(db, p), get(client, auth, p)["status"])


def test_a_transfer_indexed_out_of_order_after_expiry_reopens_its_payment(new_watcher, client, auth, db,
                                                                           sim: Simulator, config: Config) -> None:
    """The index lists one transaction 90 s after its block while later blocks' USDT events are listed at once
    (out-of-order indexing, `delay_in_index`). Paid ten seconds before expiry, the payment expires when the
    watermark (the newest event listed) passes expiry plus the overlap: the watermark shows how far the index
    reached, not that it left nothing out. The money is not lost: the sweep finds it, and since it was mined before
    the expiry took effect the payment is reopened and completes, as if it had not expired (README)."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="account", trongrid_max_rps=500.0,
                                reconcile_interval_seconds=1.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "13", expires_in_seconds=60)
    created = int(datetime.fromisoformat(p["created_at"]).timestamp() * 1000)
    expires = int(datetime.fromisoformat(p["expires_at"]).timestamp() * 1000)
    sim.advance((expires - 12_000 - sim.state()["head_timestamp"]) / 1000 - 3)
    tx = sim.transfer(WALLET, 13_000_000, from_=PAYER)
    sim.delay_in_index(tx, 90)
    sim.solidify()
    mined = sim.chain.txs[tx].block_timestamp
    # the next solid block: two minutes after creation, before the index lists the transfer (mined + 90 s)
    sim.advance((created + 122_000 - sim.state()["head_timestamp"]) / 1000 - 3)
    sim.mine(3)
    solid = sim.state()["solid_timestamp"]
    assert created <= mined < expires and expires + 60_000 <= solid < mined + 90_000, (created, mined, expires, solid)
    watcher.run_once()
    sim.mine(40)  # two more minutes: the index lists it now
    for _ in range(4):
        time.sleep(0.4)  # a new pass of the sweep is due every second here
        watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    assert events(db, p) == ["payment.expired", "payment.completed"], events(db, p)
    assert "reopened" in [e["event_type"] for e in client.get(f"/payments/{p['id']}/logs", headers=auth)
                          .get_json()["logs"]]
