"""What the operator's commands read and prune of the stored records: their counts (`db_manager.py stats`) and the
audit log's old rows (`db_manager.py cleanup-logs`)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select

from database import Database
from infra.times import iso
from ledger.stats import count_by
from models import CANCELLED, EventState, Notification, Payment, PaymentLog, PaymentStatus, Transfer, WebhookEvent


def collect_stats(db: Database) -> dict[str, Any]:
    """`db_manager.py stats`: payments, transfers, webhook events, operator notifications and audit rows, counted."""
    with db.transaction() as session:
        payments = count_by(session, Payment.status)
        cancelled = session.scalar(select(func.count()).where(Payment.failure_reason == CANCELLED)) or 0
        transfers = count_by(session, Transfer.status)
        events = count_by(session, WebhookEvent.state)
        notifications = count_by(session, Notification.state)
        logs, oldest = session.execute(select(func.count(), func.min(PaymentLog.created_at))).one()
    return {
        "payments": {
            "total": sum(payments.values()),
            **payments,
            "cancelled": cancelled,
        },
        "transfers": {"total": sum(transfers.values()), **transfers},
        "webhook_events": {"total": sum(events.values()), **events},
        "notifications": {"total": sum(notifications.values()),
                          **{state: notifications[state] for state in ("pending", "delivered", "failed")}},
        "payment_logs": {"total": logs, "oldest": iso(oldest, "seconds")},
    }


def delete_old_logs(db: Database, days: int, dry_run: bool) -> int:
    """Delete (or, `dry_run`, count) the audit rows older than `days`, except the live stories: the logs of a
    payment still pending, or whose webhook events are not all settled. Logs without a payment go by age only."""
    in_flight = exists().where(
        Payment.id == PaymentLog.payment_id, Payment.status == PaymentStatus.pending
    ) | exists().where(WebhookEvent.payment_id == PaymentLog.payment_id, WebhookEvent.state == EventState.pending)
    condition = (PaymentLog.created_at < func.now() - timedelta(days=days)) & ~in_flight
    with db.transaction() as session:
        if dry_run:
            return session.scalar(select(func.count()).select_from(PaymentLog).where(condition)) or 0
        result = session.execute(delete(PaymentLog).where(condition), execution_options={"synchronize_session": False})
        return int(result.rowcount or 0)
