"""What happened to payments: the audit log (`payment_logs`) and the webhook outbox (`webhook_events`).

Every function takes the caller's session; the caller owns the transaction, so a state change, its
audit log row and its outbox event commit together. The outbox is read here too: the dispatcher
claims due events with a lease (`claim_due`), a merchant's retry queues one again (`queue_retry`,
`requeue`). A payment's `callback_attempts` and `callback_success` describe its latest event only.

Events come in three kinds: a payment's (to its callback_url, in order per payment), account-level
ones (to MERCHANT_WEBHOOK_URL, each on its own schedule: one the receiver refuses never holds up the
others; marked by the `account` stream; stored as `no_target` when that is unset) and test webhooks
(to the URL asked for, ordered with nothing).
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Text, all_, bindparam, cast, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session, aliased

from infra.times import db_now, iso
from infra.urls import AUTHORITY_PATTERN
from ledger.serialize import payment_for_event
from models import (
    ACCOUNT_EVENT_TYPES,
    ACCOUNT_STREAM,
    DETECTED_EVENT,
    PAYMENT_EVENT_TYPES,
    TEST_EVENT_TYPE,
    EventState,
    Payment,
    PaymentLog,
    WebhookEvent,
)
from notify.messages import event_facts
from notify.outbox import queue_notification

logger = logging.getLogger(__name__)

# Due events, leased: the oldest pending event of each payment (a payment's events go out in order); any other due
# event (account-level, test) on its own. One statement: the due rows locked (SKIP LOCKED: another dispatcher's
# claim is passed by), then their lease written, returning what a sender needs.
EARLIER = aliased(WebhookEvent)
DUE = (
    select(WebhookEvent.seq)
    .where(
        WebhookEvent.state == EventState.pending,
        WebhookEvent.next_attempt_at <= func.now(),
        or_(WebhookEvent.lease_until.is_(None), WebhookEvent.lease_until < func.now()),
        WebhookEvent.seq != all_(cast(bindparam("exclude"), ARRAY(BigInteger))),
        func.lower(func.substring(WebhookEvent.callback_url, bindparam("receiver_pattern")))
        != all_(cast(bindparam("busy"), ARRAY(Text))),
        ~select(EARLIER.seq).where(EARLIER.payment_id == WebhookEvent.payment_id, EARLIER.type != DETECTED_EVENT,
                                   EARLIER.state == EventState.pending, EARLIER.seq < WebhookEvent.seq).exists(),
    )
    .order_by(WebhookEvent.next_attempt_at, WebhookEvent.seq)
    .limit(bindparam("limit"))
    .with_for_update(of=WebhookEvent, skip_locked=True)
    .cte("due")
)
CLAIM = (
    update(WebhookEvent)
    .where(WebhookEvent.seq == DUE.c.seq)
    .values(lease_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lease")),
            leased_by=bindparam("worker"))
    .returning(WebhookEvent.seq, WebhookEvent.id, WebhookEvent.payment_id, WebhookEvent.type, WebhookEvent.body,
               WebhookEvent.callback_url)
    .execution_options(synchronize_session=False)
)


# --- writing ---------------------------------------------------------------------------------------

def audit_values(payment_id: uuid.UUID | None, event_type: str, message: str, **metadata: Any) -> dict[str, Any]:
    """An audit log row's values (`payment_id` None for what concerns no payment: the watcher, unreadable
    transfers), for a caller that writes the row itself, in a statement of its own, then logs it (`log_audit`)."""
    return {"payment_id": payment_id, "event_type": event_type, "message": message, "event_metadata": metadata or None}


def log_audit(values: dict[str, Any]) -> None:
    """The audit row's line in the service's log, once its row is written."""
    logger.info("%s payment=%s %s", values["event_type"], values["payment_id"], values["message"])


def log_event(
    session: Session, payment_id: uuid.UUID | None, event_type: str, message: str, **metadata: Any
) -> PaymentLog:
    """An audit log row, added to the session, and its line logged."""
    values = audit_values(payment_id, event_type, message, **metadata)
    entry = PaymentLog(**values)
    session.add(entry)
    log_audit(values)
    return entry


def emit_event(session: Session, payment: Payment, event_type: str) -> WebhookEvent:
    """Write a webhook event into the outbox with the payment as it is now."""
    if event_type not in PAYMENT_EVENT_TYPES:
        raise ValueError(f"not a payment event type: {event_type!r}")
    session.flush()
    payment.callback_attempts = 0
    payment.callback_success = False
    if event_type != DETECTED_EVENT:
        supersede_detections(session, payment.id)
    session.flush()
    return write_event(session, event_type, payment_for_event(session, payment), payment.callback_url,
                       payment_id=payment.id)


def supersede_detections(session: Session, payment_id: uuid.UUID) -> None:
    """A payment.detected still pending when a later event of its payment is written is not sent any more: the later
    event says more, and a detection never holds up what follows it."""
    superseded = session.execute(
        update(WebhookEvent).where(WebhookEvent.payment_id == payment_id, WebhookEvent.type == DETECTED_EVENT,
                                   WebhookEvent.state == EventState.pending)
        .values(state=EventState.superseded, lease_until=None).returning(WebhookEvent.id)
        .execution_options(synchronize_session=False)).scalars().all()
    for event_id in superseded:
        log_event(session, payment_id, "webhook_superseded",
                  f"{DETECTED_EVENT} event {event_id} not sent: a later event of the payment supersedes it",
                  event_id=event_id)


def emit_account_event(session: Session, event_type: str, data: dict[str, Any], url: str | None) -> WebhookEvent:
    """Write an account-level event for MERCHANT_WEBHOOK_URL (`url`), marked as the account's; delivered on its own
    schedule, whatever happens to the others. With no URL it is stored as `no_target`, listed but never sent (and
    no backlog)."""
    if event_type not in ACCOUNT_EVENT_TYPES:
        raise ValueError(f"not an account event type: {event_type!r}")
    return write_event(session, event_type, data, url, stream=ACCOUNT_STREAM)


def emit_test_event(session: Session, url: str) -> WebhookEvent:
    """Write a `webhook.test` event for `url`: signed and retried like any other, ordered with none."""
    data = {"message": "A test webhook: when its signature verifies, your receiver is ready.", "url": url}
    return write_event(session, TEST_EVENT_TYPE, data, url)


def write_event(session: Session, event_type: str, data: dict[str, Any], url: str | None, *,
                payment_id: uuid.UUID | None = None, stream: str | None = None) -> WebhookEvent:
    """One outbox row whose body (sent unchanged on every attempt) holds `data`; pending, due now, when it has a
    target, else `no_target`. The operator's notification of it (notify/), when NOTIFY_EVENTS names its type, is
    written with it."""
    event_id = f"evt_{uuid.uuid4().hex}"
    created = db_now(session)
    body = {"id": event_id, "type": event_type, "created_at": iso(created), "data": data}
    event = WebhookEvent(
        id=event_id,
        payment_id=payment_id,
        stream=stream,
        type=event_type,
        body=json.dumps(body, separators=(",", ":")),
        callback_url=url,
        state=EventState.pending if url else EventState.no_target,
        next_attempt_at=created,
    )
    session.add(event)
    queue_notification(session, event_type, event_facts(event_type, data), payment_id)
    where = "queued" if url else "stored: no target is configured (MERCHANT_WEBHOOK_URL is unset)"
    log_event(session, payment_id, "webhook_queued", f"{event_type} event {event_id} {where}", event_id=event_id)
    return event


# --- reading the outbox: claims, summaries, manual retries ----------------------------------------

def claim_due(session: Session, limit: int, lease_seconds: float, token: str, exclude: Sequence[int] = (),
              busy: Sequence[str] = ()) -> list[Row[Any]]:
    """Lease up to `limit` due events to `token`: the oldest pending event of each payment, none in `exclude`
    (sequence numbers) nor for a receiver (URL authority) in `busy`."""
    params = {"limit": limit, "lease": lease_seconds, "worker": token, "exclude": list(exclude),
              "busy": list(busy), "receiver_pattern": AUTHORITY_PATTERN}
    return list(session.execute(CLAIM, params).all())


def release_leases(session: Session, seqs: Sequence[int], token: str) -> None:
    """Give back the leases `token` holds on these events, so they can be claimed again at once."""
    session.execute(update(WebhookEvent).where(WebhookEvent.seq.in_(list(seqs)), WebhookEvent.leased_by == token)
                    .values(lease_until=None, leased_by=None).execution_options(synchronize_session=False))


def update_payment_summary(session: Session, event: WebhookEvent) -> None:
    """callback_attempts/success describe the payment's latest event only."""
    if event.payment_id is None:
        return
    latest = session.scalar(select(func.max(WebhookEvent.seq)).where(WebhookEvent.payment_id == event.payment_id))
    if latest != event.seq:
        return
    session.execute(
        update(Payment)
        .where(Payment.id == event.payment_id)
        .values(callback_attempts=event.attempts, callback_success=event.state == EventState.delivered)
    )


def latest_event(session: Session, payment_id: uuid.UUID, *, for_update: bool = False) -> WebhookEvent | None:
    query = select(WebhookEvent).where(WebhookEvent.payment_id == payment_id).order_by(WebhookEvent.seq.desc())
    if for_update:
        query = query.with_for_update()
    return session.scalars(query.limit(1)).first()


def queue_retry(session: Session, payment: Payment) -> WebhookEvent | None:
    """Send the payment's latest event again, now, with a fresh schedule (same id, same body)."""
    event = latest_event(session, payment.id, for_update=True)
    if event is None:
        return None
    return requeue(session, event, event.callback_url)  # type: ignore[arg-type]  # a payment's event has its URL


def find_event(session: Session, event_id: str) -> WebhookEvent | None:
    """The event with this id, locked (its payment first, when it has one: the dispatcher locks in that order)."""
    found = session.execute(select(WebhookEvent.seq, WebhookEvent.payment_id).where(WebhookEvent.id == event_id))
    row = found.first()
    if row is None:
        return None
    if row.payment_id is not None:
        session.execute(select(Payment.id).where(Payment.id == row.payment_id).with_for_update())
    return session.scalars(select(WebhookEvent).where(WebhookEvent.seq == row.seq).with_for_update()).one_or_none()


def retry_target(event: WebhookEvent, merchant_webhook_url: str | None) -> str | None:
    """Where a retried event goes: an account-level event to MERCHANT_WEBHOOK_URL as it is set now (else where it
    went before), any other event where it went before; None when there is nowhere to send it."""
    if event.stream == ACCOUNT_STREAM:
        return merchant_webhook_url or event.callback_url
    return event.callback_url


def requeue(session: Session, event: WebhookEvent, url: str) -> WebhookEvent:
    """Send `event` again to `url`, now, with a fresh schedule (same id, same body); the caller holds its lock.

    An attempt already in flight keeps its lease and records its outcome as usual.
    """
    previous_state = event.state.value
    event.state = EventState.pending
    event.callback_url = url
    event.next_attempt_at = db_now(session)
    event.schedule_position = 0
    event.delivered_at = None
    update_payment_summary(session, event)
    log_event(
        session, event.payment_id, "webhook_retry_queued",
        f"{event.type} event {event.id} queued again by request (was {previous_state})",
        event_id=event.id, previous_state=previous_state,
    )
    return event

