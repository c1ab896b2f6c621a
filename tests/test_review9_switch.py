"""A switch to the blocks strategy starts where the account strategy stopped, whatever node answers the search."""
from __future__ import annotations

from sqlalchemy import select

from config import Config
from models import Transfer
from tests.conftest import WALLET, create, events, get, pay
from tron_sim import Simulator


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
