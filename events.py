"""What happened to payments: the audit log (`payment_logs`) and the webhook outbox (`webhook_events`).

Every function takes the caller's session; the caller owns the transaction, so a state change, its
audit log row and its outbox event commit together. The outbox is read here too: the dispatcher
claims due events with a lease (`claim_due`), a merchant's retry queues one again (`queue_retry`).
A payment's `callback_attempts` and `callback_success` describe its latest event only.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from models import WEBHOOK_EVENT_TYPES, EventState, Payment, PaymentLog, WebhookEvent
from schemas import serialize_payment
from ssrf import AUTHORITY_PATTERN
from times import db_now, iso

logger = logging.getLogger(__name__)

# Due events, leased: the oldest pending event of each payment (a payment's events go out in order).
CLAIM_SQL = text(
    """
    WITH due AS (
        SELECT e.seq FROM webhook_events e
        WHERE e.state = 'pending'
          AND e.next_attempt_at <= now()
          AND (e.lease_until IS NULL OR e.lease_until < now())
          AND e.seq <> ALL(CAST(:exclude AS bigint[]))
          AND lower(substring(e.callback_url from :receiver_pattern)) <> ALL(CAST(:busy AS text[]))
          AND NOT EXISTS (
              SELECT 1 FROM webhook_events earlier
              WHERE earlier.payment_id = e.payment_id AND earlier.state = 'pending' AND earlier.seq < e.seq
          )
        ORDER BY e.next_attempt_at, e.seq
        LIMIT :limit
        FOR UPDATE OF e SKIP LOCKED
    )
    UPDATE webhook_events w
    SET lease_until = now() + make_interval(secs => :lease), leased_by = :worker
    FROM due WHERE w.seq = due.seq
    RETURNING w.seq, w.id, w.payment_id, w.type, w.body, w.callback_url
    """
)
RELEASE_SQL = text(
    "UPDATE webhook_events SET lease_until = NULL, leased_by = NULL "
    "WHERE seq = ANY(CAST(:seqs AS bigint[])) AND leased_by = :worker"
)


# --- writing ---------------------------------------------------------------------------------------

def audit_values(payment_id: uuid.UUID | None, event_type: str, message: str, **metadata: Any) -> dict[str, Any]:
    """An audit log row's values, its line logged (`payment_id` None for what concerns no payment: the watcher,
    unreadable transfers). For a caller that writes the row itself, in a statement of its own."""
    logger.info("%s payment=%s %s", event_type, payment_id, message)
    return {"payment_id": payment_id, "event_type": event_type, "message": message, "event_metadata": metadata or None}


def log_event(
    session: Session, payment_id: uuid.UUID | None, event_type: str, message: str, **metadata: Any
) -> PaymentLog:
    """An audit log row, added to the session."""
    entry = PaymentLog(**audit_values(payment_id, event_type, message, **metadata))
    session.add(entry)
    return entry


def emit_event(session: Session, payment: Payment, event_type: str) -> WebhookEvent:
    """Write a webhook event into the outbox with the payment as it is now."""
    if event_type not in WEBHOOK_EVENT_TYPES:
        raise ValueError(f"not a webhook event type: {event_type!r}")
    session.flush()
    event_id = f"evt_{uuid.uuid4().hex}"
    created = db_now(session)
    payment.callback_attempts = 0
    payment.callback_success = False
    session.flush()
    body = {
        "id": event_id,
        "type": event_type,
        "created_at": iso(created),
        "data": serialize_payment(session, payment),
    }
    event = WebhookEvent(
        id=event_id,
        payment_id=payment.id,
        type=event_type,
        body=json.dumps(body, separators=(",", ":")),
        callback_url=payment.callback_url,
        next_attempt_at=created,
    )
    session.add(event)
    log_event(session, payment.id, "webhook_queued", f"{event_type} event {event_id} queued", event_id=event_id)
    return event


# --- reading the outbox: claims, summaries, manual retries ----------------------------------------

def claim_due(session: Session, limit: int, lease_seconds: float, token: str, exclude: Sequence[int] = (),
              busy: Sequence[str] = ()) -> list[Row[Any]]:
    """Lease up to `limit` due events to `token`: the oldest pending event of each payment, none in `exclude`
    (sequence numbers) nor for a receiver (URL authority) in `busy`."""
    params = {"limit": limit, "lease": lease_seconds, "worker": token, "exclude": list(exclude),
              "busy": list(busy), "receiver_pattern": AUTHORITY_PATTERN}
    return list(session.execute(CLAIM_SQL, params).all())


def release_leases(session: Session, seqs: Sequence[int], token: str) -> None:
    """Give back the leases `token` holds on these events, so they can be claimed again at once."""
    session.execute(RELEASE_SQL, {"seqs": list(seqs), "worker": token})


def update_payment_summary(session: Session, event: WebhookEvent) -> None:
    """callback_attempts/success describe the payment's latest event only."""
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
    """Send the payment's latest event again, now, with a fresh schedule (same id, same body).

    An attempt already in flight keeps its lease and records its outcome as usual.
    """
    event = latest_event(session, payment.id, for_update=True)
    if event is None:
        return None
    previous_state = event.state.value
    event.state = EventState.pending
    event.next_attempt_at = db_now(session)
    event.schedule_position = 0
    event.delivered_at = None
    payment.callback_attempts = event.attempts
    payment.callback_success = False
    log_event(
        session, payment.id, "webhook_retry_queued",
        f"{event.type} event {event.id} queued again by request (was {previous_state})",
        event_id=event.id, previous_state=previous_state,
    )
    return event

