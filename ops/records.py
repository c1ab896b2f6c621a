"""What the operator's commands read and prune of the stored records: their counts (`db_manager.py stats`) and the
audit log's old rows (`db_manager.py cleanup-logs`)."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select

from database import Database
from infra.times import iso
from ledger.stats import read_counts
from models import CANCELLED, EventState, Payment, PaymentLog, PaymentStatus, TransferStatus, WebhookEvent


def collect_stats(db: Database) -> dict[str, Any]:
    """`db_manager.py stats`: payments, transfers, webhook events and audit rows, counted."""
    with db.transaction() as session:
        counted = read_counts(session)
        payments = counted.by("payments", PaymentStatus)
        cancelled = counted.of(f"payments:{CANCELLED}")
        transfers = counted.by("transfers", TransferStatus)
        events = counted.by("webhook_events", EventState)
        logs, oldest = session.execute(select(func.count(), func.min(PaymentLog.created_at))).one()
    return {
        "payments": {
            "total": sum(payments.values()),
            **payments,
            "cancelled": cancelled,
        },
        "transfers": {"total": sum(transfers.values()), **transfers},
        "webhook_events": {"total": sum(events.values()), **events},
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
