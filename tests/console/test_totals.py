"""The chart's per-day totals, kept by the triggers of migration 0011 (console/totals.py reads them)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, text, update

from console.totals import last_days
from models import DailyTotal, PaymentStatus, Transfer, TransferStatus
from tests.conftest import add_payment, add_transfer


def test_the_daily_totals_follow_inserts_updates_and_deletes(db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        payment = add_payment(session)
        transfer = add_transfer(session, "5", TransferStatus.unmatched)
    with db.transaction() as session:
        session.execute(update(Transfer).where(Transfer.id == transfer.id).values(
            status=TransferStatus.credited, payment_id=payment.id))
    with db.Session() as session:
        assert [(r.payments_created, r.usdt_credited) for r in session.scalars(select(DailyTotal))] == [(1, 5)]
    with db.transaction() as session:
        session.execute(text("DELETE FROM transfers"))
        session.execute(text("DELETE FROM payment_logs"))
        session.execute(text("DELETE FROM payments"))
    with db.Session() as session:
        assert [(r.payments_created, r.usdt_credited) for r in session.scalars(select(DailyTotal))] == [(0, 0)]


def test_thirty_days_oldest_first_with_empty_days(db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        done = add_payment(session, PaymentStatus.completed, "12", created_ago=timedelta(days=3))
        add_payment(session, created_ago=timedelta(days=40))
        add_transfer(session, "12", TransferStatus.credited, done)
    today = datetime.now(UTC).date()
    with db.Session() as session:
        days = last_days(session, today)
    assert len(days) == 30 and days[0].day == today - timedelta(days=29) and days[-1].day == today
    assert sum(d.payments for d in days) == 1 and days[-1].usdt == Decimal(12)
    assert [d.payments for d in days if d.day == today - timedelta(days=3)] == [1]
