"""Operator notifications end to end: each event written with its notification, delivered through Apprise's json://
and form:// plugins (from a child process) to receivers on 127.0.0.1, retried, surviving a restart, never holding up
a webhook, never showing a target's URL."""
from __future__ import annotations

import logging
import time
import uuid

import psutil
import pytest
from sqlalchemy import select

from app import create_app, start_background, stop_background
from chain.upstream_watch import UpstreamTransitions
from delivery.webhooks import WebhookDispatcher
from infra.config import Config
from infra.locales import CATALOGUES
from infra.notify_targets import NotifyTarget
from infra.times import to_ms
from ledger.matching import assign_transfer, credit_transfer
from ledger.records import TransferLog
from models import EventState, Notification, Payment
from notify.dispatcher import NotificationDispatcher
from tests.conftest import PAYER, TEST_API_KEY, WALLET, WALLET_B, Receiver, Reply, create, wait_for
from tests.notify.conftest import SECRET, messages, targets
from web.services import services_of

WALLET_C = "TLsV52sRDL79HXGGm9yzwKibb6BeruhUzy"
ZH = CATALOGUES["zh"]


def ledger_db(app):  # type: ignore[no-untyped-def]
    """The app's database: its sessions carry the notification settings, as the composition root made them."""
    return services_of(app).db


def transfer(app, payment: dict, micro: int, to: str | None = None,  # type: ignore[no-untyped-def]
             after_ms: int = 1000) -> TransferLog:
    """Credit a transfer of `micro` to the payment's wallet (or `to`), at a block time `after_ms` after its
    creation."""
    with ledger_db(app).transaction() as session:
        created = session.get(Payment, uuid.UUID(payment["id"])).created_at if payment else None
        at = to_ms(created) + after_ms if created else int(time.time() * 1000)
        log = TransferLog(uuid.uuid4().hex * 2, 0, PAYER, to or payment["wallet_address"], micro, 1000, at)
        credit_transfer(session, log, 86400)
    return log


def rows(app, **where: object) -> list[Notification]:  # type: ignore[no-untyped-def]
    with ledger_db(app).Session() as session:
        query = select(Notification).order_by(Notification.seq)
        for name, value in where.items():
            query = query.where(getattr(Notification, name) == value)
        return list(session.scalars(query))


def deliver_all(app, config: Config, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    """Run a dispatcher (six senders) until no notification is pending."""
    dispatcher = NotificationDispatcher(ledger_db(app), config.with_overrides(notify_workers=6), poll_interval=0.05)
    dispatcher.start()
    try:
        assert wait_for(lambda: not rows(app, state=EventState.pending), timeout), \
            [(n.event_type, n.last_error) for n in rows(app, state=EventState.pending)]
    finally:
        dispatcher.stop()


# --- every event type, once, with its text ------------------------------------------------------

@pytest.fixture
def config(config: Config, receiver: Receiver) -> Config:
    """One json:// target for these tests (the two-target case has its own test)."""
    return config.with_overrides(notify_targets=targets(receiver, "/json"), merchant_webhook_url="http://127.0.0.1:9/m",
                                 rate_sources=(("kraken", "http://127.0.0.1:9"),))  # asked by no refresher here


def test_each_event_type_arrives_once_with_its_text(app, client, auth, config, receiver) -> None:
    earlier = create(client, auth, "1", order_id="order-earlier", wallet=WALLET_B)
    transfer(app, earlier, 1_000_000)
    stray = transfer(app, {}, 3_000_000, to=WALLET_B)  # its wallet's payment is complete: unmatched
    paid = create(client, auth, "12.5", order_id="order-complete")
    partly = create(client, auth, "20", order_id="order-partial", wallet=WALLET_B)
    cancelled = create(client, auth, "7", order_id="order-cancel")
    paid_tx = transfer(app, paid, 12_500_000)
    transfer(app, partly, 5_000_000)
    assert client.post(f"/payments/{cancelled['id']}/cancel", headers=auth).status_code == 200
    with ledger_db(app).transaction() as session:
        assign_transfer(session, stray.transaction_hash, 0, uuid.UUID(partly["id"]), 86400)
    late = create(client, auth, "2", order_id="order-late", wallet=WALLET_C, expires_in_seconds=60)
    transfer(app, late, 2_000_000, after_ms=120_000)  # read past its expiry: expired, then paid late
    r = client.post("/payments", headers=auth, json={"order_id": "fiat", "price_amount": "10", "price_currency": "JPY",
                                                     "wallet_address": WALLET, "callback_url": "http://127.0.0.1:9/h"})
    assert r.status_code == 503
    deliver_all(app, config)

    arrived = messages(receiver, "/json")
    got = {m["title"]: m["message"] for m in arrived}
    assert len(got) == len(arrived) == len(rows(app)) == 10, sorted(got)  # each once
    assert sorted(n.event_type for n in rows(app)) == [
        "payment.cancelled", "payment.completed", "payment.completed", "payment.expired", "payment.paid_late",
        "payment.partial", "payment.partial", "rate.unavailable", "transfer.assigned", "transfer.unmatched"]
    body = got["Payment received: 12.5 USDT"]
    assert "Order order-complete" in body and "Received 12.5 of 12.5 USDT" in body
    assert f"Transaction {paid_tx.transaction_hash[:8]}…{paid_tx.transaction_hash[-6:]}" in body
    assert paid_tx.transaction_hash not in body and paid["checkout_url"] not in body
    assert body.endswith(f"{config.public_base_url}/admin/payments/{paid['id']}")  # the operator's page of it
    assert "Received 5 of 20 USDT" in got["Partly paid: 5 of 20 USDT"]
    assert "Order order-partial" in got["Transfer assigned by hand: 3 USDT"]
    assert "Received 0 of 2 USDT" in got["Payment expired: order order-late"]
    assert "Order order-late\nReceived 2 of 2 USDT" in got["Paid after expiry: 2 USDT"]
    assert f"/admin/payments/{cancelled['id']}" in got["Payment cancelled: order order-cancel"]
    assert f"To {WALLET_B}: no open payment of the wallet could take it" in got["Money that matches no payment: 3 USDT"]
    assert got["No exchange rate for JPY"] == ("New payments priced in JPY are refused until a rate is usable again "
                                               "(no source has quoted it yet).")
    secrets_never_shown(receiver, config)


def secrets_never_shown(receiver: Receiver, config: Config) -> None:
    """No API key, webhook secret, callback URL or target URL in any message that arrived."""
    sent = " ".join(m["title"] + m["message"] for path in ("/json", "/form") for m in messages(receiver, path))
    for secret in (TEST_API_KEY, config.webhook_secret, "http://127.0.0.1:9", SECRET):
        assert secret not in sent


def test_upstream_changes_are_announced_once_per_transition_after_an_interval(app, config, receiver) -> None:
    down = [{"url": "http://127.0.0.1:7/node", "state": "failing", "last_error": "connection refused"}]
    up = [{"url": "http://127.0.0.1:7/node", "state": "ok", "last_error": None}]
    watch = UpstreamTransitions(hold_seconds=1.0)
    cycles = [(down, 0.0), (up, 0.5), (down, 1.0), (down, 1.5), (down, 2.1), (down, 3.0), (down, 9.0),
              (up, 10.0), (up, 11.5), (up, 12.0)]
    announced = []
    for states, now in cycles:
        with ledger_db(app).transaction() as session:
            announced.append(watch.observe(session, states, now))
    # A failure that lasted one cycle says nothing; one that held past the interval is said once, as is its end.
    assert [a for a in announced if a] == [["upstream.degraded"], ["upstream.recovered"]]
    assert announced[4] == ["upstream.degraded"] and announced[8] == ["upstream.recovered"]
    again = UpstreamTransitions(hold_seconds=1.0)  # a restarted watcher: what was announced is in the database
    for now in (20.0, 22.0):
        with ledger_db(app).transaction() as session:
            assert again.observe(session, up, now) == []
    deliver_all(app, config)
    got = {m["title"]: m["message"] for m in messages(receiver, "/json")}
    assert got == {"Upstream degraded: http://127.0.0.1:7/node":
                   "http://127.0.0.1:7/node is failing: connection refused",
                   "Upstream recovered: http://127.0.0.1:7/node": "http://127.0.0.1:7/node answers again."}


def test_a_webhook_that_exhausts_its_retries_is_announced(app, client, auth, config, receiver) -> None:
    hook = receiver.url("/hook")
    receiver.script("/hook", Reply(500), Reply(500))
    p = create(client, auth, "3", callback_url=hook)
    transfer(app, p, 3_000_000)
    webhooks = WebhookDispatcher(ledger_db(app), config.with_overrides(webhook_retry_schedule=(0,)))
    assert webhooks.run_once() == 1 and webhooks.run_once() == 1
    failed = rows(app, event_type="webhook.failed")
    assert len(failed) == 1 and failed[0].payment_id == uuid.UUID(p["id"])
    deliver_all(app, config)
    [message] = [m for m in messages(receiver, "/json") if m["title"].startswith("Webhook failed")]
    assert message["title"] == "Webhook failed: payment.completed"
    assert "gave up after 2 attempts (HTTP 500)" in message["message"] and "Order " in message["message"]
    assert hook not in message["message"]


# --- what the settings choose -------------------------------------------------------------------

def test_notify_events_filters_and_the_language_is_notify_language(db, config, auth, receiver) -> None:
    chosen = config.with_overrides(notify_events=frozenset({"payment.completed"}), notify_language="zh")
    app = create_app(chosen, database=db)
    client = app.test_client()
    p = create(client, auth, "4", order_id="zh-order")
    other = create(client, auth, "5")
    assert client.post(f"/payments/{other['id']}/cancel", headers=auth).status_code == 200
    transfer(app, p, 4_000_000)
    assert [n.event_type for n in rows(app)] == ["payment.completed"]  # the cancellation made none
    deliver_all(app, chosen)
    [message] = messages(receiver, "/json")
    assert message["title"] == ZH["notify.payment.completed"].format(received="4")
    assert ZH["notify_order"].format(order_id="zh-order") in message["message"]


# --- delivery: retries, restarts, a hanging target ----------------------------------------------

def test_a_target_answering_500_then_200_gets_it_and_a_restart_in_between_loses_nothing(db, config, auth,
                                                                                        receiver) -> None:
    config = config.with_overrides(notify_targets=targets(receiver, "/json", "/form"))
    app = create_app(config, database=db)
    receiver.script("/form", Reply(500))
    p = create(app.test_client(), auth, "6", order_id="retry-order")
    transfer(app, p, 6_000_000)
    first = NotificationDispatcher(ledger_db(app), config)
    assert first.run_once() == 2  # json delivered, form refused (500): due again at once (schedule 0, 0)
    [retrying] = rows(app, state=EventState.pending)
    assert retrying.scheme == "form" and retrying.attempts == 1 and "500" in (retrying.last_error or "")
    # The process that claims it next dies holding the lease (0.5 s here); after a restart the new one sends it.
    crashed = NotificationDispatcher(ledger_db(app), config, lease_margin_seconds=-3.5)
    assert len(crashed.claim(5)) == 1
    restarted = NotificationDispatcher(ledger_db(create_app(config, database=db)), config)
    assert restarted.run_once() == 0  # still leased
    assert wait_for(lambda: restarted.run_once() == 1, 5)
    [done] = rows(app, scheme="form")
    assert done.state == EventState.delivered and done.attempts == 2 and done.last_error is None
    forms = messages(receiver, "/form")
    assert len(forms) == 2 and forms[0] == forms[1] and forms[1]["title"] == "Payment received: 6 USDT"
    assert len(messages(receiver, "/json")) == 1


def test_a_hanging_target_never_delays_a_webhook_and_is_cut_at_the_deadline(app, client, auth, config,
                                                                             receiver) -> None:
    config = config.with_overrides(notify_timeout_seconds=2.0, notify_retry_schedule=())
    services_of(app).config = config
    receiver.script("/json", Reply(delay=30))
    start_background(app)
    try:
        p = create(client, auth, "8", callback_url=receiver.url("/hook"))
        started = time.monotonic()
        transfer(app, p, 8_000_000)
        services_of(app).wake_dispatcher()
        assert wait_for(lambda: receiver.to("/hook"), 5)
        webhook_after = time.monotonic() - started
        assert wait_for(lambda: rows(app, state=EventState.failed), 8)
        cut_after = time.monotonic() - started
    finally:
        stop_background(app)
    assert webhook_after < 1.5, webhook_after  # the notification hung meanwhile
    [failed] = rows(app)
    assert failed.last_error == "no outcome within 2s: the attempt was ended" and 2.0 <= cut_after < 6.0
    children = [proc for proc in psutil.Process().children(recursive=True) if "child.py" in " ".join(proc.cmdline())]
    assert children == []  # the child was ended, not left behind


# --- what the operator sees --------------------------------------------------------------------

def test_the_operator_lists_notifications_without_their_urls(app, client, auth, config, receiver, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script("/json", Reply(500, body=f"no, {SECRET}".encode()), Reply(500), Reply(500))
    p = create(client, auth, "9")
    transfer(app, p, 9_000_000)
    deliver_all(app, config)
    listed = client.get("/notifications", headers=auth)
    assert listed.status_code == 200
    [item] = listed.get_json()["notifications"]
    target = config.notify_targets[0]
    assert item["target"] == f"json:{target.fingerprint[:8]}" and item["state"] == "failed"
    assert item["attempts"] == 3 and item["title"] == "Payment received: 9 USDT"
    assert client.get("/notifications?state=failed", headers=auth).get_json()["notifications"] == [item]
    assert client.get("/notifications?state=pending", headers=auth).get_json()["notifications"] == []
    assert client.get("/notifications?state=lost", headers=auth).status_code == 400
    assert client.get("/notifications").status_code == 401
    assert "notification" not in str(client.get("/events", headers=auth).get_json()["events"])
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'tron_usdt_notifications{state="failed"} 1.0' in metrics
    shown = [listed.get_data(as_text=True), client.get("/health").get_data(as_text=True), metrics, caplog.text,
             repr(config)]
    for text in shown:
        assert SECRET not in text and target.url not in text


def test_a_notification_survives_its_target_leaving_notify_urls_as_a_failure(app, client, auth, config) -> None:
    p = create(client, auth, "2")
    transfer(app, p, 2_000_000)
    moved = config.with_overrides(notify_targets=(NotifyTarget.of("json://127.0.0.1:9/elsewhere"),))
    assert NotificationDispatcher(ledger_db(app), moved).run_once() == 1
    [row] = rows(app)
    assert row.state == EventState.failed and row.last_error == "its target is no longer in NOTIFY_URLS"
