"""A chaos run under both strategies: the pool answers 30 % of the time from a node 20 blocks behind, the index is
90 s late, one solid head is ten years ahead and one 300 blocks ahead, one transfer carries an amount too large to
store and one answer drips. Every payment is found, none twice, none expires early, no cursor passes the true head,
and no fault holds the watcher up longer than one interval."""
from __future__ import annotations

import time
import uuid
from decimal import Decimal

from sqlalchemy import select

from chain.chain_view import ChainView
from infra.config import Config
from models import Payment, PaymentLog, RejectedTransfer, Transfer, WalletCursor, WebhookEvent
from tron_client import TronClient
from tron_sim import Simulator, random_address

INTERVAL = 1.0  # the watcher's interval in this run: no fault may hold a cycle up longer
BLOCKS_PER_CYCLE = 2


def test_chaos_run_loses_nothing(client, auth, db, sim: Simulator, config: Config, strategy, new_watcher):
    cfg = config.with_overrides(
        trongrid_api_url=sim.url, watcher_strategy=strategy, trongrid_max_rps=1000.0,
        polling_interval_seconds=INTERVAL, trongrid_timeout_seconds=0.4, reconcile_interval_seconds=5.0,
        # The simulator mines a block (3 s of chain time) every few tens of milliseconds here: the head rules get
        # that pace, and chain time runs ahead of the wall clock by up to an hour in this run.
        tron_block_seconds=0.02, upstream_clock_skew_seconds=3600.0,
    )
    upstream = TronClient(sim.url, cfg.usdt_contract, max_rps=1000.0, timeout=0.4, max_retries=2,
                          backoff_base=0.01, backoff_cap=0.02, rate_limit_pause=0.01)
    watcher = new_watcher(cfg, upstream)
    wallets = [random_address() for _ in range(4)]
    paid = [payment(client, auth, wallets[i % 4], f"{10 + i}.5", 7200) for i in range(8)]
    unpaid = [payment(client, auth, wallets[i], f"{90 + i}", 300) for i in range(2)]
    sim.set_node_lag(0.3, 20, seed=11)
    sim.set_index_lag(90)
    schedule = {
        3: lambda: sim.set_fault("head_future", count=1),
        6: lambda: sim.set_fault("head_ahead", count=1, blocks=300),
        9: lambda: sim.transfer(wallets[0], 10**27),  # an amount NUMERIC(20,6) cannot hold
        12: lambda: sim.set_fault("drip", count=1, seconds=0.3, path_prefix=drip_path(strategy)),
    }
    paying = {2 + 2 * i: p for i, p in enumerate(paid)}  # one payment paid every other cycle
    durations = []
    for cycle in range(200):
        if cycle in schedule:
            schedule[cycle]()
        if cycle in paying:
            p = paying[cycle]
            sim.transfer(p["wallet_address"], int(Decimal(p["expected_amount_usdt"]) * 10**6))
        sim.mine(BLOCKS_PER_CYCLE)
        started = time.monotonic()
        watcher.run_once()
        durations.append(time.monotonic() - started)
        no_cursor_beyond_the_true_head(db, sim, cfg)
        if cycle > 40 and all_settled(db, paid, unpaid):
            break
    assert max(durations) <= INTERVAL, sorted(durations)[-3:]
    for p in paid:
        assert status(db, p) == "completed", p["order_id"]
        with db.Session() as s:
            transfers = list(s.scalars(select(Transfer).where(Transfer.payment_id == uuid.UUID(p["id"]))))
            kinds = list(s.scalars(select(WebhookEvent.type).where(WebhookEvent.payment_id == uuid.UUID(p["id"]))))
        assert len(transfers) == 1 and kinds == ["payment.completed"]  # found once, credited once
    for p in unpaid:
        assert status(db, p) == "expired" and expired_on_time(db, p)
    with db.Session() as s:
        assert [r.amount_raw for r in s.scalars(select(RejectedTransfer))] == [str(10**27)]


def payment(client, auth, wallet: str, amount: str, expires: int) -> dict:  # type: ignore[no-untyped-def]
    body = {"wallet_address": wallet, "expected_amount_usdt": amount, "order_id": uuid.uuid4().hex,
            "callback_url": "http://127.0.0.1:9/hook", "expires_in_seconds": expires}
    response = client.post("/payments", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def drip_path(strategy: str) -> str:
    return "/v1/accounts/" if strategy == "account" else "/walletsolidity/gettransactioninfobyblocknum"


def status(db, p: dict) -> str:  # type: ignore[no-untyped-def]
    with db.Session() as s:
        return s.get(Payment, uuid.UUID(p["id"])).status.value


def all_settled(db, paid: list[dict], unpaid: list[dict]) -> bool:  # type: ignore[no-untyped-def]
    return all(status(db, p) == "completed" for p in paid) and all(status(db, p) == "expired" for p in unpaid)


def expired_on_time(db, p: dict) -> bool:  # type: ignore[no-untyped-def]
    """Expired by a read that had really reached the expiry in chain time."""
    with db.Session() as s:
        row = s.get(Payment, uuid.UUID(p["id"]))
        read = s.scalars(select(PaymentLog.event_metadata).where(PaymentLog.payment_id == row.id,
                                                                 PaymentLog.event_type == "expired")).one()
    return read["read_up_to"] >= int(row.expires_at.timestamp() * 1000)


def no_cursor_beyond_the_true_head(db, sim: Simulator, cfg: Config) -> None:  # type: ignore[no-untyped-def]
    state = sim.state()
    view = ChainView(cfg)
    with db.Session() as s:
        head = view.accepted_head(s)
        block = view.state(s, "block_cursor")
        wallet_reads = list(s.scalars(select(WalletCursor.last_checked_timestamp)))
    assert head is None or (head.number <= state["solid_head"] and head.timestamp <= state["solid_timestamp"])
    assert block is None or block["number"] <= state["solid_head"]
    assert all(read <= state["solid_timestamp"] for read in wallet_reads)
