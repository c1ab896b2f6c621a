"""Webhook delivery against real HTTP receivers on 127.0.0.1 and a real PostgreSQL."""
from __future__ import annotations

import json
import select as io_select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from database import Database  # noqa: E402
from delivery.signing import (  # noqa: E402
    drop_previous_webhook_secret,
    ensure_webhook_secret,
    generate_secret,
    get_signing_secrets,
    rotate_webhook_secret,
)
from delivery.webhooks import AttemptResult, WebhookDispatcher  # noqa: E402
from infra.config import Config  # noqa: E402
from infra.retry_schedule import JITTER_FRACTION, jittered, next_delay  # noqa: E402
from ledger.events import emit_account_event, emit_event, emit_test_event, queue_retry  # noqa: E402
from models import EventState, Payment, PaymentLog, PaymentStatus, WebhookEvent  # noqa: E402
from tests.conftest import (  # noqa: E402
    WALLET,
    Receiver,
    Reply,
    accept_forever,
    create,
    get,
    pay,
    set_fields,
    wait_for,
)
from web.schemas import event_to_dict  # noqa: E402

SECRET = generate_secret()
# --- fixtures: database (conftest's per-run test database, emptied per test) -------------------

@pytest.fixture
def wh_db(db: Database) -> Database:
    return db


def make_config(**overrides: Any) -> Config:
    options: dict[str, Any] = {
        "allow_private_callbacks": True,
        "webhook_secret": SECRET,
        "webhook_retry_schedule": (0, 0, 0),
        "webhook_timeout_seconds": 1.0,
        "webhook_workers": 2,
    }
    return Config(**{**options, **overrides})


def make_payment(db: Database, callback_url: str) -> uuid.UUID:
    with db.transaction() as session:
        payment = Payment(
            id=uuid.uuid4(),
            order_id=f"order-{uuid.uuid4().hex[:12]}",
            wallet_address="TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf",
            expected_amount_usdt=Decimal("10.5"),
            requested_amount_usdt=Decimal("10.5"),
            status=PaymentStatus.pending,
            callback_url=callback_url,
            meta={"cart": 7},
            request_fingerprint="0" * 64,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        session.add(payment)
    return payment.id


def emit(db: Database, payment_id: uuid.UUID, event_type: str = "payment.completed") -> str:
    with db.transaction() as session:
        return emit_event(session, session.get(Payment, payment_id), event_type).id  # type: ignore[arg-type]


def load_event(db: Database, event_id: str) -> WebhookEvent:
    with db.Session() as session:
        return session.scalars(select(WebhookEvent).where(WebhookEvent.id == event_id)).one()


def load_payment(db: Database, payment_id: uuid.UUID) -> Payment:
    with db.Session() as session:
        return session.get(Payment, payment_id)  # type: ignore[return-value]


def attempt_logs(db: Database, payment_id: uuid.UUID) -> list[PaymentLog]:
    with db.Session() as session:
        return list(session.scalars(
            select(PaymentLog)
            .where(PaymentLog.payment_id == payment_id, PaymentLog.event_type.like("webhook_%"))
            .where(PaymentLog.event_type.not_in(["webhook_queued", "webhook_retry_queued"]))
            .order_by(PaymentLog.id)
        ))


# --- fixtures: receiver ------------------------------------------------------------------------

# --- signing ------------------------------------------------------------------------------------

def test_delivered_request_verifies_with_the_standardwebhooks_library(wh_db: Database, receiver: Receiver) -> None:
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id)
    assert WebhookDispatcher(wh_db, make_config()).run_once() == 1

    [request] = receiver.requests
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == event_id == payload["id"]
    assert request.headers["content-type"] == "application/json"
    assert request.body.decode() == load_event(wh_db, event_id).body
    assert payload["type"] == "payment.completed"
    assert payload["data"]["id"] == str(payment_id) and payload["data"]["expected_amount_usdt"] == "10.5"
    event = load_event(wh_db, event_id)
    assert (event.state, event.attempts, event.last_status_code) == (EventState.delivered, 1, 200)
    assert event.leased_by is None and event.lease_until is None
    payment = load_payment(wh_db, payment_id)
    assert (payment.callback_attempts, payment.callback_success) == (1, True)
    [log] = attempt_logs(wh_db, payment_id)
    assert log.event_type == "webhook_delivered"
    assert log.event_metadata["status_code"] == 200 and log.event_metadata["event_id"] == event_id
    assert log.event_metadata["attempt"] == 1 and isinstance(log.event_metadata["duration_ms"], int)


def test_rotation_signs_with_both_secrets_each_verifying_alone(wh_db: Database, receiver: Receiver) -> None:
    config = make_config(webhook_secret=None)
    old = ensure_webhook_secret(wh_db, config)
    assert old is not None and ensure_webhook_secret(wh_db, config) is None
    with wh_db.transaction() as session:
        new = rotate_webhook_secret(session, config)
    payment_id = make_payment(wh_db, receiver.url())
    emit(wh_db, payment_id)
    WebhookDispatcher(wh_db, config).run_once()

    [request] = receiver.requests
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    Webhook(new).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)
    for secret, signature in zip((new, old), signatures, strict=True):  # current first
        Webhook(secret).verify(request.body, {**request.headers, "webhook-signature": signature})
    with pytest.raises(Exception):  # noqa: B017 - the library raises its own WebhookVerificationError
        Webhook(old).verify(request.body, {**request.headers, "webhook-signature": signatures[0]})

    with wh_db.transaction() as session:
        assert drop_previous_webhook_secret(session) is True
        assert get_signing_secrets(session, config) == [new]


# --- retries -----------------------------------------------------------------------------------

def test_failing_receiver_gets_the_same_event_until_it_succeeds(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(500), Reply(503), Reply(404), Reply(204))
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id)
    dispatcher = WebhookDispatcher(wh_db, make_config())
    assert [dispatcher.run_once() for _ in range(5)] == [1, 1, 1, 1, 0]

    assert [r.headers["webhook-id"] for r in receiver.requests] == [event_id] * 4
    assert len({r.body for r in receiver.requests}) == 1
    for request in receiver.requests:
        Webhook(SECRET).verify(request.body, request.headers)
    event = load_event(wh_db, event_id)
    assert (event.state, event.attempts, event.last_status_code, event.last_error) == (
        EventState.delivered, 4, 204, None
    )
    logs = attempt_logs(wh_db, payment_id)
    assert [log.event_type for log in logs] == ["webhook_attempt"] * 3 + ["webhook_delivered"]
    assert [log.event_metadata["status_code"] for log in logs] == [500, 503, 404, 204]
    assert [log.event_metadata["attempt"] for log in logs] == [1, 2, 3, 4]
    payment = load_payment(wh_db, payment_id)
    assert (payment.callback_attempts, payment.callback_success) == (4, True)


def test_410_gone_stops_the_event(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(410))
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id)
    dispatcher = WebhookDispatcher(wh_db, make_config())
    assert dispatcher.run_once() == 1
    assert dispatcher.run_once() == 0
    event = load_event(wh_db, event_id)
    assert (event.state, event.attempts, event.last_status_code) == (EventState.failed, 1, 410)
    assert [log.event_type for log in attempt_logs(wh_db, payment_id)] == ["webhook_failed"]


def test_retry_after_on_429_is_waited_for(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(429, headers={"Retry-After": "1"}))
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id)
    dispatcher = WebhookDispatcher(wh_db, make_config(webhook_retry_schedule=(0, 0)))
    assert dispatcher.run_once() == 1
    assert dispatcher.run_once() == 0  # the schedule says "now", the receiver said "in a second"
    event = load_event(wh_db, event_id)
    with wh_db.Session() as session:
        wait = (event.next_attempt_at - session.scalar(select(func.now()))).total_seconds()
    assert 0.5 < wait <= 1.0
    assert wait_for(lambda: dispatcher.run_once() == 1, timeout=3)
    first, second = receiver.requests
    assert second.at - first.at >= 0.95
    assert load_event(wh_db, event_id).state == EventState.delivered


def test_exhausted_schedule_fails_and_a_manual_retry_sends_the_same_event(
    wh_db: Database, receiver: Receiver
) -> None:
    receiver.script("/hook", *[Reply(500)] * 3)
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id)
    dispatcher = WebhookDispatcher(wh_db, make_config(webhook_retry_schedule=(0, 0)))
    assert [dispatcher.run_once() for _ in range(4)] == [1, 1, 1, 0]
    event = load_event(wh_db, event_id)
    assert (event.state, event.attempts, event.last_error) == (EventState.failed, 3, "HTTP 500")
    assert event_to_dict(event)["next_attempt_at"] is None
    with wh_db.Session() as session:
        failed = session.scalar(select(func.count()).where(WebhookEvent.state == EventState.failed))
    assert failed == 1
    assert [log.event_type for log in attempt_logs(wh_db, payment_id)][-1] == "webhook_failed"
    assert (load_payment(wh_db, payment_id).callback_attempts, load_payment(wh_db, payment_id).callback_success) == (
        3, False
    )

    with wh_db.transaction() as session:
        retried = queue_retry(session, session.get(Payment, payment_id))  # type: ignore[arg-type]
        assert retried is not None and retried.id == event_id
    assert dispatcher.run_once() == 1
    assert receiver.requests[-1].headers["webhook-id"] == event_id
    assert receiver.requests[-1].body == receiver.requests[0].body
    event = load_event(wh_db, event_id)
    assert (event.state, event.attempts, event.schedule_position) == (EventState.delivered, 4, 1)
    assert (load_payment(wh_db, payment_id).callback_attempts, load_payment(wh_db, payment_id).callback_success) == (
        4, True
    )


def test_queue_retry_without_event_returns_none(wh_db: Database, receiver: Receiver) -> None:
    payment_id = make_payment(wh_db, receiver.url())
    with wh_db.transaction() as session:
        assert queue_retry(session, session.get(Payment, payment_id)) is None  # type: ignore[arg-type]


def test_retry_policy_functions() -> None:
    assert jittered(10, rand=lambda: 0.0) == pytest.approx(9.0)
    assert jittered(10, rand=lambda: 1.0) == pytest.approx(11.0)
    assert jittered(0, rand=lambda: 0.0) == 0.0
    assert next_delay((5, 300), 1, None, rand=lambda: 0.5) == 5
    assert next_delay((5, 300), 2, 1000, rand=lambda: 0.5) == 1000
    assert next_delay((5, 300), 2, 10, rand=lambda: 0.5) == 300
    assert next_delay((5, 300), 3, None) is None


# --- ordering, concurrency, crashes --------------------------------------------------------------

def test_a_payments_events_go_out_in_order(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(500))
    payment_id = make_payment(wh_db, receiver.url())
    ids = [emit(wh_db, payment_id, t) for t in ("payment.partial", "payment.partial", "payment.completed")]
    dispatcher = WebhookDispatcher(wh_db, make_config())
    assert dispatcher.run_once() == 1  # the first failed; the later two wait for it
    assert load_event(wh_db, ids[1]).attempts == 0
    assert dispatcher.run_once() == 3
    assert [r.headers["webhook-id"] for r in receiver.requests] == [ids[0], ids[0], ids[1], ids[2]]


def test_callback_summary_follows_the_latest_event_only(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(500), Reply(500))
    payment_id = make_payment(wh_db, receiver.url())
    emit(wh_db, payment_id, "payment.partial")
    dispatcher = WebhookDispatcher(wh_db, make_config())
    dispatcher.run_once()
    assert load_payment(wh_db, payment_id).callback_attempts == 1
    emit(wh_db, payment_id, "payment.completed")
    dispatcher.run_once()  # the older event's second attempt: not the payment's latest event any more
    assert load_payment(wh_db, payment_id).callback_attempts == 0


def test_threads_deliver_many_payments_each_in_order(wh_db: Database, receiver: Receiver) -> None:
    paths = [f"/p{n}" for n in range(5)]
    expected: dict[str, list[str]] = {}
    for path in paths:
        receiver.script(path, Reply(500, delay=0.05), Reply(200, delay=0.02))
        payment_id = make_payment(wh_db, receiver.url(path))
        expected[path] = [emit(wh_db, payment_id, t) for t in ("payment.partial", "payment.paid_late")]
    dispatcher = WebhookDispatcher(wh_db, make_config(webhook_workers=3), poll_interval=0.05)
    dispatcher.start()
    try:
        assert wait_for(lambda: len(receiver.requests) >= 15, timeout=10)
    finally:
        dispatcher.stop(5)
    for path in paths:
        first, second = expected[path]
        assert [r.headers["webhook-id"] for r in receiver.to(path)] == [first, first, second]


def test_a_hanging_receiver_does_not_hold_up_another_payment(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/slow", Reply(200, delay=3))
    slow_event = emit(wh_db, make_payment(wh_db, receiver.url("/slow")))
    fast_event = emit(wh_db, make_payment(wh_db, receiver.url("/fast")))
    config = make_config(webhook_timeout_seconds=0.5, webhook_retry_schedule=(60,))
    dispatcher = WebhookDispatcher(wh_db, config, poll_interval=0.05)
    started = time.monotonic()
    dispatcher.start()
    try:
        assert time.monotonic() - started < 0.2  # start() never waits for a delivery
        assert wait_for(lambda: load_event(wh_db, fast_event).state == EventState.delivered, timeout=2)
        assert time.monotonic() - started < 1.0
        assert wait_for(lambda: load_event(wh_db, slow_event).attempts == 1, timeout=2)
    finally:
        dispatcher.stop(2)
    slow = load_event(wh_db, slow_event)
    assert slow.state == EventState.pending and "timed out" in (slow.last_error or "")


class DrippingReceiver:
    """Reads each webhook, then answers one byte every `every` seconds for as long as the client listens.

    It records every connection per webhook-id: when it opened and closed, and the most that were
    open at once for one id."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.lock = threading.Lock()
        self.open: dict[str, int] = {}
        self.most_open: dict[str, int] = {}
        self.spans: list[tuple[str, float, float]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=accept_forever, args=(self.listener, self._serve), daemon=True).start()

    def url(self, path: str = "/drip") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            webhook_id = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                               if line.lower().startswith(b"webhook-id:")), "?")
            opened = time.monotonic()
            with self.lock:
                self.open[webhook_id] = self.open.get(webhook_id, 0) + 1
                self.most_open[webhook_id] = max(self.most_open.get(webhook_id, 0), self.open[webhook_id])
            try:
                for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 100_000:
                    conn.sendall(bytes([byte]))
                    # Wait for the next byte's turn, noticing at once when the sender hangs up.
                    if io_select.select([conn], [], [], self.every)[0] and not conn.recv(1):
                        break
            except OSError:  # the sender gave up: its deadline
                pass
            finally:
                with self.lock:
                    self.open[webhook_id] -= 1
                    self.spans.append((webhook_id, opened, time.monotonic()))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dripping() -> Iterator[DrippingReceiver]:
    with closing(DrippingReceiver()) as server:
        yield server


def test_a_dripping_receiver_never_delays_other_payments_webhooks(
    wh_db: Database, receiver: Receiver, dripping: DrippingReceiver
) -> None:
    """Six payments call back a receiver that answers a byte every 0.1 s (each attempt would last
    hours); meanwhile 50 other payments' webhooks each arrive within 2 s of their event."""
    config = make_config(webhook_workers=4, webhook_timeout_seconds=1.5, webhook_retry_schedule=(0,) * 20)
    slow_events = [emit(wh_db, make_payment(wh_db, dripping.url())) for _ in range(6)]
    dispatcher = WebhookDispatcher(wh_db, config, poll_interval=0.05)
    dispatcher.start()
    emitted: dict[str, float] = {}
    try:
        assert wait_for(lambda: sum(dripping.open.values()) >= 3, timeout=3)  # the slow attempts are running
        for n in range(50):
            event_id = emit(wh_db, make_payment(wh_db, receiver.url(f"/fast{n}")))
            emitted[event_id] = time.monotonic()
            dispatcher.notify()
            time.sleep(0.05)
        assert wait_for(lambda: len(receiver.requests) >= 50, timeout=5)
    finally:
        dispatcher.stop(5)
    assert wait_for(lambda: sum(dripping.open.values()) == 0, timeout=3)  # the receiver saw the last hang-ups
    arrived = {r.headers["webhook-id"]: r.at for r in receiver.requests}
    delays = sorted(arrived[event_id] - at for event_id, at in emitted.items())
    assert len(delays) == 50 and delays[-1] < 2.0, delays[-5:]
    # the slow receiver kept its share of the senders all along, each attempt cut at its deadline
    assert {webhook_id for webhook_id, _, _ in dripping.spans} <= set(slow_events)
    assert len(dripping.spans) >= 6
    assert all(closed - opened < 1.5 + 0.5 for _, opened, closed in dripping.spans)
    for event_id in slow_events:
        event = load_event(wh_db, event_id)
        if event.attempts:
            assert "timed out after 1.5s" in (event.last_error or "")


def test_a_dripping_receivers_event_is_never_claimed_again_while_its_attempt_runs(
    wh_db: Database, dripping: DrippingReceiver
) -> None:
    """Two dispatchers with a lease just longer than the attempt deadline: each attempt ends before
    its lease, so the event is never sent twice at the same time."""
    # A short pause between attempts, so that attempts one after the other never look simultaneous.
    config = make_config(webhook_workers=2, webhook_timeout_seconds=0.5, webhook_retry_schedule=(0.15,) * 50)
    event_id = emit(wh_db, make_payment(wh_db, dripping.url()))
    dispatchers = [WebhookDispatcher(wh_db, config, worker_id=f"d{n}", poll_interval=0.02, lease_margin_seconds=0.3)
                   for n in range(2)]
    assert dispatchers[0].lease_seconds == pytest.approx(0.8)
    for dispatcher in dispatchers:
        dispatcher.start()
    try:
        assert wait_for(lambda: load_event(wh_db, event_id).attempts >= 4, timeout=10)
    finally:
        for dispatcher in dispatchers:
            dispatcher.stop(5)
    assert wait_for(lambda: sum(dripping.open.values()) == 0, timeout=3)
    assert dripping.most_open == {event_id: 1}
    spans = sorted((opened, closed) for _, opened, closed in dripping.spans)
    assert len(spans) >= 4
    assert all(closed - opened < 0.5 + 0.3 for opened, closed in spans)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    with wh_db.Session() as session:
        stale = session.scalars(select(PaymentLog).where(PaymentLog.event_type == "webhook_attempt")).all()
    assert not any((log.event_metadata or {}).get("stale") for log in stale)


def test_two_dispatchers_never_send_the_same_attempt(wh_db: Database, receiver: Receiver) -> None:
    for n in range(24):
        path = f"/m{n}"
        receiver.script(path, Reply(200, delay=0.01))
        emit(wh_db, make_payment(wh_db, receiver.url(path)))
    dispatchers = [WebhookDispatcher(wh_db, make_config(), worker_id=f"w{n}") for n in range(2)]
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def run(dispatcher: WebhookDispatcher) -> None:
        barrier.wait()
        counts.append(dispatcher.run_once())

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 24 and all(counts)  # both took part
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == 24 == len(set(ids))
    with wh_db.Session() as session:
        assert set(session.scalars(select(WebhookEvent.attempts))) == {1}


def test_a_dangling_lease_is_taken_over_with_the_same_event_id(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(500))
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id)
    config = make_config(webhook_timeout_seconds=0.2)
    crashed = WebhookDispatcher(wh_db, config, worker_id="crashed", lease_margin_seconds=0.2)
    assert crashed.run_once() == 1  # attempt 1 fails
    [claimed] = crashed.claim(1)  # attempt 2 claimed, then the process "dies"
    successor = WebhookDispatcher(wh_db, config, worker_id="successor")
    assert successor.run_once() == 0  # the lease still holds
    time.sleep(0.7)
    assert successor.run_once() == 1
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event_id, event_id]
    # The "dead" process wakes up and tries to record its attempt: the lease is gone, nothing changes.
    assert crashed.sender.record(claimed, AttemptResult(200, None, 5)) is False
    event = load_event(wh_db, event_id)
    assert (event.state, event.attempts, event.leased_by) == (EventState.delivered, 2, None)
    assert any(log.event_metadata.get("stale") for log in attempt_logs(wh_db, payment_id))


def test_a_stopped_dispatcher_is_continued_by_a_new_one(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(500))
    event_id = emit(wh_db, make_payment(wh_db, receiver.url()))
    config = make_config(webhook_retry_schedule=(0.5, 0.5))
    first = WebhookDispatcher(wh_db, config, worker_id="first", poll_interval=0.05)
    first.start()
    try:
        assert wait_for(lambda: load_event(wh_db, event_id).attempts == 1, timeout=5.0)
    finally:
        first.stop(2)
    second = WebhookDispatcher(wh_db, config, worker_id="second")
    assert wait_for(lambda: second.run_once() == 1, timeout=3)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event_id, event_id]
    event = load_event(wh_db, event_id)
    assert (event.state, event.attempts) == (EventState.delivered, 2)


# --- what the receiver answers -----------------------------------------------------------------

def test_redirects_are_not_followed(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(302, headers={"Location": receiver.url("/elsewhere")}))
    event_id = emit(wh_db, make_payment(wh_db, receiver.url()))
    assert WebhookDispatcher(wh_db, make_config()).run_once() == 1
    assert [r.path for r in receiver.requests] == ["/hook"]
    event = load_event(wh_db, event_id)
    assert event.state == EventState.pending and event.last_status_code == 302
    assert "redirects are not followed" in (event.last_error or "")


def test_a_huge_response_is_read_no_further_than_64kb(wh_db: Database, receiver: Receiver) -> None:
    receiver.script("/hook", Reply(500, body=b"x" * 5_000_000), Reply(200, body=b"y" * 5_000_000))
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id)
    dispatcher = WebhookDispatcher(wh_db, make_config())
    started = time.monotonic()
    assert dispatcher.run_once() + dispatcher.run_once() == 2
    assert time.monotonic() - started < 3
    assert load_event(wh_db, event_id).state == EventState.delivered
    first_log = attempt_logs(wh_db, payment_id)[0]
    assert first_log.event_metadata["response_excerpt"] == "x" * 256


def test_unreachable_receiver_is_a_failed_attempt(wh_db: Database) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    event_id = emit(wh_db, make_payment(wh_db, f"http://127.0.0.1:{port}/hook"))
    assert WebhookDispatcher(wh_db, make_config()).run_once() == 1
    event = load_event(wh_db, event_id)
    assert event.state == EventState.pending and event.last_status_code is None
    assert "connection failed" in (event.last_error or "")


def test_delivery_refuses_an_address_that_became_private(wh_db: Database, receiver: Receiver) -> None:
    """Created with a public-looking name; at delivery the name resolves to 127.0.0.1."""
    port = receiver.server.server_address[1]

    def rebound(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    payment_id = make_payment(wh_db, f"http://shop.example:{port}/hook")
    event_id = emit(wh_db, payment_id)
    config = make_config(allow_private_callbacks=False)
    assert WebhookDispatcher(wh_db, config, resolver=rebound).run_once() == 1
    assert receiver.requests == []
    event = load_event(wh_db, event_id)
    assert event.state == EventState.pending and event.attempts == 1
    assert "callback address refused" in (event.last_error or "") and "loopback" in (event.last_error or "")
    [log] = attempt_logs(wh_db, payment_id)
    assert "callback address refused" in log.event_metadata["error"]


def test_event_to_dict(wh_db: Database, receiver: Receiver) -> None:
    payment_id = make_payment(wh_db, receiver.url())
    event_id = emit(wh_db, payment_id, "payment.partial")
    pending = event_to_dict(load_event(wh_db, event_id))
    assert pending["state"] == "pending" and pending["next_attempt_at"] is not None
    WebhookDispatcher(wh_db, make_config()).run_once()
    shown = event_to_dict(load_event(wh_db, event_id))
    assert set(shown) == {
        "id", "type", "payment_id", "created_at", "state", "attempts", "next_attempt_at",
        "last_status_code", "last_error", "delivered_at", "data",
    }
    assert shown["id"] == event_id and shown["type"] == "payment.partial"
    assert shown["payment_id"] == str(payment_id) and shown["state"] == "delivered"
    assert shown["attempts"] == 1 and shown["next_attempt_at"] is None and shown["last_status_code"] == 200
    assert shown["delivered_at"].endswith("Z") and shown["created_at"].endswith("Z")
    assert shown["data"] == json.loads(receiver.requests[0].body)["data"]


# --- from the chain to the receiver -------------------------------------------------------------

def test_end_to_end_from_the_chain_body_headers_and_summary(client, auth, db, sim, watcher, watch_config, receiver):
    cfg = watch_config.with_overrides(webhook_retry_schedule=(0, 0, 0), webhook_timeout_seconds=2.0)
    p = create(client, auth, "10.25")
    set_fields(db, p, callback_url=receiver.url())
    receiver.script("/hook", Reply(status=500), Reply(status=200))
    pay(sim, WALLET, 4_000_000)
    watcher.run_once()
    pay(sim, WALLET, 6_250_000)
    watcher.run_once()
    dispatcher = WebhookDispatcher(db, cfg)
    for _ in range(4):
        dispatcher.run_once()
    got = receiver.to("/hook")
    # partial (500, then 200), then completed (200): in order, same id and body on the retry
    ids = [r.headers["webhook-id"] for r in got]
    assert len(got) == 3 and ids[0] == ids[1] != ids[2]
    assert got[0].body == got[1].body
    bodies = [json.loads(r.body) for r in got]
    assert [b["type"] for b in bodies] == ["payment.partial", "payment.partial", "payment.completed"]
    for r, b in zip(got, bodies, strict=True):
        assert set(b) == {"id", "type", "created_at", "data"} and b["id"] == r.headers["webhook-id"]
        Webhook(cfg.webhook_secret).verify(r.body, r.headers)
        assert int(r.headers["webhook-timestamp"]) > 0
    partial, completed = bodies[0]["data"], bodies[2]["data"]
    assert partial["status"] == "pending" and partial["received_amount_usdt"] == "4"
    assert partial["expected_amount_usdt"] == "10.25" and len(partial["transfers"]) == 1
    assert partial["transfers"][0]["amount_usdt"] == "4"
    assert completed["status"] == "completed" and completed["received_amount_usdt"] == "10.25"
    assert [t["amount_usdt"] for t in completed["transfers"]] == ["4", "6.25"]
    now = get(client, auth, p)
    assert set(completed) == set(now)
    assert now["callback_attempts"] == 1 and now["callback_success"] is True
    listed = client.get("/events", headers=auth).get_json()["events"]
    assert [(e["type"], e["state"], e["attempts"]) for e in listed] == [
        ("payment.partial", "delivered", 2), ("payment.completed", "delivered", 1)]
    logs = client.get(f"/payments/{p['id']}/logs", headers=auth).get_json()["logs"]
    attempts = [entry for entry in logs if entry["event_type"] in ("webhook_attempt", "webhook_delivered")]
    assert [entry["metadata"]["status_code"] for entry in attempts] == [500, 200, 200]
    for entry in logs:  # money in log metadata is always a plain string
        for key, value in (entry["metadata"] or {}).items():
            if key.endswith("amount_usdt"):
                assert isinstance(value, str) and "E" not in value, (key, value)



# --- account-level events, test webhooks and retries of any event --------------------------------

def merchant_client(config: Config, db: Database, url: str | None):  # type: ignore[no-untyped-def]
    """The API of an instance whose MERCHANT_WEBHOOK_URL is `url`."""
    from app import create_app

    return create_app(config.with_overrides(merchant_webhook_url=url), database=db).test_client()


def emit_account(db: Database, url: str | None, event_type: str = "transfer.unmatched", n: int = 0) -> str:
    with db.transaction() as session:
        return emit_account_event(session, event_type, {"transaction_hash": f"{n:064x}", "open_payments": []}, url).id


def listed(client, auth) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {e["id"]: e for e in client.get("/events?limit=200", headers=auth).get_json()["events"]}


@pytest.mark.parametrize("strategy", ["account"])
def test_unmatched_money_is_announced_to_the_merchant_webhook_url(client, auth, db, sim, watcher, watch_config,
                                                                    receiver):
    """From the chain to MERCHANT_WEBHOOK_URL: the transfer as /transfers shows it and the wallet's open payments."""
    cfg = watch_config.with_overrides(merchant_webhook_url=receiver.url("/merchant"), webhook_retry_schedule=(0,))
    a = create(client, auth, "10")
    b = create(client, auth, "20")
    pay(sim, WALLET, 7_000_000)
    type(watcher)(db, cfg, client=watcher.client).run_once()
    assert WebhookDispatcher(db, cfg).run_once() == 1
    [request] = receiver.to("/merchant")
    payload = Webhook(cfg.webhook_secret).verify(request.body, request.headers)
    assert payload["type"] == "transfer.unmatched" and request.headers["webhook-id"] == payload["id"]
    [transfer] = client.get("/transfers?status=unmatched", headers=auth).get_json()["transfers"]
    data = payload["data"]
    assert {k: v for k, v in data.items() if k not in ("open_payments", "open_payments_count")} == transfer
    assert [p["id"] for p in data["open_payments"]] == [b["id"], a["id"]] and data["open_payments_count"] == 2
    shown = get(client, auth, a)  # a summary: no metadata, no transfers
    assert data["open_payments"][1] == {k: shown[k] for k in ("id", "order_id", "expected_amount_usdt",
                                                              "received_amount_usdt", "status")}
    event = listed(client, auth)[payload["id"]]
    assert (event["state"], event["payment_id"], event["attempts"]) == ("delivered", None, 1)


def test_a_refused_account_event_holds_up_none_of_the_others(wh_db: Database, receiver: Receiver) -> None:
    """A MERCHANT_WEBHOOK_URL receiver that refuses one event (413, as nginx does for a large body) retries it on its
    own schedule; the account's later events are delivered meanwhile."""
    receiver.script("/merchant", Reply(413))
    url = receiver.url("/merchant")
    first = emit_account(wh_db, url, n=1)
    later = [emit_account(wh_db, url, "transfer.assigned", n=n) for n in range(2, 6)]
    dispatcher = WebhookDispatcher(wh_db, make_config(webhook_retry_schedule=(300, 1800)))
    assert dispatcher.run_once() == 5
    assert [load_event(wh_db, e).state for e in later] == [EventState.delivered] * 4
    refused = load_event(wh_db, first)
    assert (refused.state, refused.attempts, refused.last_status_code) == (EventState.pending, 1, 413)
    # its own schedule: the first retry 300 s on, spread by the schedule's jitter
    assert refused.next_attempt_at >= refused.created_at + timedelta(seconds=300 * (1 - JITTER_FRACTION))
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted([first, *later])
    for request in receiver.requests:
        Webhook(SECRET).verify(request.body, request.headers)
    with wh_db.Session() as session:  # every attempt is logged, on no payment
        attempts = session.scalars(select(PaymentLog.event_type).where(
            PaymentLog.payment_id.is_(None), PaymentLog.event_type.in_(["webhook_attempt", "webhook_delivered"])))
        assert sorted(attempts) == ["webhook_attempt"] + ["webhook_delivered"] * 4
    # and a later one written while the refused one waits goes out at once too
    newest = emit_account(wh_db, url, n=6)
    assert dispatcher.run_once() == 1 and load_event(wh_db, newest).state == EventState.delivered


def test_a_test_webhook_and_the_streams_hold_each_other_up_nowhere(wh_db: Database, receiver: Receiver) -> None:
    """A test webhook whose receiver fails waits for nothing and holds up neither the account's events nor a
    payment's; the account's failing events hold up no payment's."""
    receiver.script("/test", *[Reply(500)] * 3)
    receiver.script("/merchant", *[Reply(500)] * 3)
    with wh_db.transaction() as session:
        test_id = emit_test_event(session, receiver.url("/test")).id
    account = emit_account(wh_db, receiver.url("/merchant"))
    payment_event = emit(wh_db, make_payment(wh_db, receiver.url("/hook")))
    later_test = None
    with wh_db.transaction() as session:
        later_test = emit_test_event(session, receiver.url("/other")).id
    dispatcher = WebhookDispatcher(wh_db, make_config(webhook_retry_schedule=(60,)))
    assert dispatcher.run_once() == 4
    assert load_event(wh_db, payment_event).state == EventState.delivered
    assert load_event(wh_db, later_test).state == EventState.delivered
    assert load_event(wh_db, test_id).state == load_event(wh_db, account).state == EventState.pending


def test_without_merchant_webhook_url_account_events_are_stored_not_pending(client, auth, config, db: Database,
                                                                            receiver: Receiver) -> None:
    event_id = emit_account(db, None)
    assert load_event(db, event_id).callback_url is None
    assert WebhookDispatcher(db, make_config()).run_once() == 0
    assert listed(client, auth)[event_id]["state"] == "no_target"
    stats = client.get("/stats").get_json()
    assert (stats["webhooks_pending"], stats["webhooks_failed"]) == (0, 0)
    assert client.get("/health").get_json()["status"] in ("healthy", "degraded")  # no watcher here; not a backlog
    # a retry needs somewhere to send it
    assert client.post(f"/events/{event_id}/retry", headers=auth).status_code == 409
    assert load_event(db, event_id).state == EventState.no_target
    # once MERCHANT_WEBHOOK_URL is set, the merchant may ask for it: same id, same body
    merchant = merchant_client(config, db, receiver.url("/merchant"))
    r = merchant.post(f"/events/{event_id}/retry", headers=auth)
    assert r.status_code == 202 and r.get_json()["event_id"] == event_id
    assert client.get("/stats").get_json()["webhooks_pending"] == 1
    assert WebhookDispatcher(db, make_config()).run_once() == 1
    [request] = receiver.to("/merchant")
    assert request.headers["webhook-id"] == event_id and request.body.decode() == load_event(db, event_id).body
    assert listed(client, auth)[event_id]["state"] == "delivered"


def test_retry_of_any_event_sends_it_again_with_the_same_id(client, auth, db: Database, receiver: Receiver) -> None:
    account = emit_account(db, receiver.url("/merchant"))
    payment_id = make_payment(db, receiver.url("/hook"))
    older, latest = emit(db, payment_id, "payment.partial"), emit(db, payment_id)
    dispatcher = WebhookDispatcher(db, make_config())
    assert dispatcher.run_once() == 3
    for event_id in (account, older, latest):
        assert client.post(f"/events/{event_id}/retry", headers=auth).status_code == 202
        assert listed(client, auth)[event_id]["state"] == "pending"
    assert load_payment(db, payment_id).callback_success is False  # the latest event is on its way again
    assert dispatcher.run_once() == 3
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted([account, older, latest] * 2)
    assert [load_event(db, e).attempts for e in (account, older, latest)] == [2, 2, 2]
    assert load_payment(db, payment_id).callback_success is True
    with db.Session() as session:
        requeued = session.scalars(select(PaymentLog.message).where(PaymentLog.event_type == "webhook_retry_queued"))
        assert len(list(requeued)) == 3


def test_test_webhook_through_the_api(config, auth, db: Database, receiver: Receiver) -> None:
    """Signed, retried, logged and listed like any other event; to MERCHANT_WEBHOOK_URL when no url is sent."""
    receiver.script("/test", Reply(503))
    merchant = merchant_client(config, db, receiver.url("/merchant"))
    r = merchant.post("/webhooks/test", json={"url": receiver.url("/test")}, headers=auth)
    assert r.status_code == 202 and r.get_json()["url"] == receiver.url("/test")
    asked = r.get_json()["event_id"]
    r = merchant.post("/webhooks/test", headers=auth)  # no body: MERCHANT_WEBHOOK_URL
    assert r.status_code == 202 and r.get_json()["url"] == receiver.url("/merchant")
    default = r.get_json()["event_id"]
    events_now = listed(merchant, auth)
    assert {(events_now[e]["type"], events_now[e]["state"], events_now[e]["payment_id"]) for e in (asked, default)} \
        == {("webhook.test", "pending", None)}
    dispatcher = WebhookDispatcher(db, make_config(webhook_secret=config.webhook_secret))
    dispatcher.run_once()
    dispatcher.run_once()
    for path, event_id in (("/test", asked), ("/merchant", default)):
        request = receiver.to(path)[-1]
        payload = Webhook(config.webhook_secret).verify(request.body, request.headers)
        assert (payload["id"], payload["type"], payload["data"]["url"]) == (event_id, "webhook.test",
                                                                           receiver.url(path))
    assert len(receiver.to("/test")) == 2  # a 503, then retried
    events_now = listed(merchant, auth)
    assert [(events_now[e]["state"], events_now[e]["attempts"]) for e in (asked, default)] == [("delivered", 2),
                                                                                              ("delivered", 1)]
    with db.Session() as session:
        logged = session.scalars(select(PaymentLog.event_metadata).where(PaymentLog.event_type.in_(
            ["webhook_attempt", "webhook_delivered"])).order_by(PaymentLog.id))
        assert [m["status_code"] for m in logged if m["event_id"] == asked] == [503, 200]
