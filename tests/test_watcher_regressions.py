"""Failure cases found in review: a crash between two logs of one transaction, stale cursors,
expiry racing a locked payment row, a failed transaction re-read by the overlap."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import select

import scanning
from matching import credit_transfer
from models import Payment, Transfer, WalletCursor, WebhookEvent
from tests.test_watcher import PAYER, WALLET, create, get, log_types, make_watcher, pay
from times import to_ms
from tron_client import TransferLog


@pytest.fixture
def account_config(config, sim):
    return config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="account", trongrid_max_rps=500.0,
                                 polling_interval_seconds=0.2)


def test_a_crash_between_two_logs_of_one_transaction_loses_neither(client, auth, db, sim, account_config,
                                                                  monkeypatch):
    create(client, auth, "1.5")
    b = create(client, auth, "2.5")
    sim.transaction([{"to": WALLET, "amount": 1_500_000, "from": PAYER},
                     {"to": WALLET, "amount": 2_500_000, "from": PAYER}])
    sim.solidify()
    watcher = make_watcher(db, account_config)
    real = scanning.credit_transfer
    failures = []

    def crash_once_on_the_second_log(session, transfer, late, found_by):  # type: ignore[no-untyped-def]
        if transfer.log_index == 1 and not failures:
            failures.append(transfer)
            raise RuntimeError("the process dies between the two logs")
        return real(session, transfer, late, found_by)

    monkeypatch.setattr(scanning, "credit_transfer", crash_once_on_the_second_log)
    with pytest.raises(RuntimeError):
        watcher.run_once()
    watcher.run_once()
    with db.Session() as s:
        assert sorted(s.scalars(select(Transfer.log_index))) == [0, 1]
    assert get(client, auth, b)["status"] == "completed"
    watcher.stop()


def test_a_wallet_reused_after_a_month_is_not_read_back_a_month(client, auth, db, sim, account_config):
    create(client, auth, "3")
    head = sim.chain.head
    with db.transaction() as s:
        s.add(WalletCursor(chain=account_config.chain_key, wallet_address=WALLET,
                           last_checked_timestamp=head.timestamp - 30 * 86400 * 1000))
    watcher = make_watcher(db, account_config.with_overrides(watcher_strategy="blocks"))
    with db.Session() as s:
        wallets = watcher.view.watched_wallets(s)
    watcher.blocks.seed(head.number, head.timestamp, wallets)
    with db.Session() as s:
        cursor = watcher.view.state(s, "block_cursor")
    assert head.number - cursor["number"] < 100  # the new payment's creation, not the month-old cursor
    watcher.stop()


def test_expiry_waits_for_a_locked_payment_instead_of_passing_it_by(client, auth, db):
    p = create(client, auth, "5")
    pid = uuid.UUID(p["id"])
    with db.Session() as s:
        expires = s.get(Payment, pid).expires_at
    late = TransferLog("ab" * 32, 0, PAYER, WALLET, 5_000_000, 1, to_ms(expires) + 1000)
    holder = db.Session()
    holder.begin()
    holder.execute(select(Payment.id).where(Payment.id == pid).with_for_update())  # e.g. a webhook being recorded

    def credit() -> None:
        with db.transaction() as s:
            credit_transfer(s, late, 86400)

    thread = threading.Thread(target=credit)
    thread.start()
    time.sleep(0.3)
    holder.commit()
    holder.close()
    thread.join(10)
    got = get(client, auth, p)
    assert got["status"] == "expired" and got["paid_late"] is True
    with db.Session() as s:
        kinds = list(s.scalars(select(WebhookEvent.type).where(WebhookEvent.payment_id == pid)
                               .order_by(WebhookEvent.seq)))
    assert kinds == ["payment.expired", "payment.paid_late"]


def test_a_failed_transaction_is_fetched_and_logged_once(client, auth, db, sim, account_config):
    watcher = make_watcher(db, account_config)
    p = create(client, auth, "4")
    pay(sim, WALLET, 4_000_000, reverted=True)
    for _ in range(4):  # the 60 s overlap lists it again every cycle
        watcher.run_once()
    assert log_types(client, auth, p).count("transfer_rejected") == 1
    assert sim.count("/walletsolidity/gettransactioninfobyid") == 1
    watcher.stop()
