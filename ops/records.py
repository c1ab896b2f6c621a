"""What the operator's commands read and prune of the stored records: their counts (`db_manager.py stats`) and the
audit log's old rows (`db_manager.py cleanup-logs`)."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, exists, func, select, text, tuple_

from database import Database
from infra.times import iso
from ledger.stats import read_counts
from models import CANCELLED, EventState, Payment, PaymentLog, PaymentStatus, TransferStatus, WebhookEvent


def collect_stats(db: Database) -> dict[str, Any]:
    """`db_manager.py stats`: payments, transfers, webhook events, operator notifications and audit rows, counted."""
    with db.transaction() as session:
        counted = read_counts(session)
        payments = counted.by("payments", PaymentStatus)
        cancelled = counted.of(f"payments:{CANCELLED}")
        transfers = counted.by("transfers", TransferStatus)
        events = counted.by("webhook_events", EventState)
        notifications = counted.by("notifications", EventState)
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


# Measured on 30,000,000 rows (bench/retention.py, docs/operations.md): batches of 2,000 with 0.1 s between them
# deleted 15,000 rows/s and took the API's p99s at 200 req/s to about twice those without the cleanup (medians
# unmoved), and so did slower paces (a quarter, a tenth of the time in batches), smaller batches, an asynchronous
# commit of the batch and compressed WAL: a batch at work beside the service costs the requests it overlaps. Batches
# of 500 that fill 1 % of the time delete about 1,200 rows/s (4 million an hour, a day's audit rows of a busy
# shop in a minute) with the p99s within the noise of the runs without it. `--duty 1` runs flat out, off-peak.
CLEANUP_BATCH = 500
CLEANUP_PAUSE = 0.0
CLEANUP_DUTY = 0.01  # at most this share of the time in batches: after a batch of t s, at least 99 t s of rest
CLEANUP_LOCK_TIMEOUT = "2s"  # a batch waits no longer for a row another transaction holds: the API never queues


def cleanup_condition() -> ColumnElement[bool]:
    """SQL: the audit rows a cleanup may delete once old enough: not the live stories (the logs of a payment still
    pending, or whose webhook events are not all settled). Logs without a payment go by age only."""
    in_flight = exists().where(
        Payment.id == PaymentLog.payment_id, Payment.status == PaymentStatus.pending
    ) | exists().where(WebhookEvent.payment_id == PaymentLog.payment_id, WebhookEvent.state == EventState.pending)
    return ~in_flight


def cleanup_batch(cutoff: datetime, after: tuple[datetime, int] | None, size: int) -> Select[Any]:
    """One batch: the next `size` rows older than `cutoff` after `after` (by time, then id: a range of the time
    index, so each batch reads only its own rows), the deletable ones among them deleted. Returns (deleted, the
    window's last time and id); no row once the window is empty."""
    window = select(PaymentLog.id, PaymentLog.created_at).where(PaymentLog.created_at < cutoff)
    if after is not None:
        window = window.where(PaymentLog.created_at >= after[0],
                              tuple_(PaymentLog.created_at, PaymentLog.id) > tuple_(*after))
    window_cte = window.order_by(PaymentLog.created_at, PaymentLog.id).limit(size).cte("batch")
    deleted = (delete(PaymentLog).where(PaymentLog.id == window_cte.c.id, cleanup_condition())
               .returning(PaymentLog.id).cte("deleted"))
    last = (select(window_cte.c.created_at, window_cte.c.id)
            .order_by(window_cte.c.created_at.desc(), window_cte.c.id.desc()).limit(1).subquery())
    return select(select(func.count()).select_from(deleted).scalar_subquery(), last.c.created_at, last.c.id)


def rest_after(took: float, pause: float, duty: float) -> float:
    """Seconds to wait after a batch that took `took` s: at least `pause`, and long enough that batches fill no
    more than `duty` of the time (a slower database, busier with the service, gets longer rests)."""
    return max(pause, took * (1 - duty) / duty)


def delete_old_logs(db: Database, days: int, dry_run: bool, batch_size: int = CLEANUP_BATCH, pause: float = 0.0,
                    progress: Callable[[int], None] | None = None, duty: float = 1.0) -> int:
    """Delete (or, `dry_run`, count) the audit rows older than `days` that `cleanup_condition` allows, in batches of
    `batch_size` rows, each its own short transaction (row locks on its rows only, nothing else waits for it), with
    a rest between them (`rest_after`: `pause` seconds at least, and batches at most `duty` of the time).
    `progress` hears the running total after each batch."""
    with db.engine.connect() as conn:
        cutoff = conn.execute(select(func.now() - timedelta(days=days))).scalar_one()
        if dry_run:
            return conn.execute(select(func.count()).select_from(PaymentLog)
                                .where(PaymentLog.created_at < cutoff, cleanup_condition())).scalar_one()
    total, after = 0, None
    while True:
        started = time.monotonic()
        with db.engine.begin() as conn:
            # (jit off: compiling the batch's plan costs more than running it. synchronous_commit off: the batch's
            # COMMIT does not wait for its WAL to reach the disk, which the service's commits flush anyway; a crash
            # may forget the last batches' deletes, which the next run makes again.)
            conn.execute(text(f"SET LOCAL lock_timeout = '{CLEANUP_LOCK_TIMEOUT}'; SET LOCAL jit = off; "
                              "SET LOCAL synchronous_commit = off"))
            row = conn.execute(cleanup_batch(cutoff, after, batch_size)).first()
        if row is None:
            return total
        total += row[0]
        after = (row[1], row[2])
        if progress is not None:
            progress(total)
        rest = rest_after(time.monotonic() - started, pause, duty)
        if rest:
            time.sleep(rest)
