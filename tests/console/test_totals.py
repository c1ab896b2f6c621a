"""The chart's per-day totals, kept by the triggers of migration 0014 (console/totals.py reads them)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, text, update

from console.totals import Day, compact, last_days
from models import DailyTotal, PaymentStatus, Transfer, TransferStatus
from tests.conftest import add_payment, add_transfer


def stored_days(db) -> list[Day]:  # type: ignore[no-untyped-def]
    """The days that have rows, each summed over its shards."""
    with db.Session() as session:
        return [d for d in last_days(session, datetime.now(UTC).date(), 400)
                if session.scalar(select(DailyTotal.day).where(DailyTotal.day == d.day).limit(1))]


def test_the_daily_totals_follow_inserts_updates_and_deletes(db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        payment = add_payment(session)
        transfer = add_transfer(session, "5", TransferStatus.unmatched)
    with db.transaction() as session:
        session.execute(update(Transfer).where(Transfer.id == transfer.id).values(
            status=TransferStatus.credited, payment_id=payment.id))
    assert [(d.payments, d.usdt) for d in stored_days(db)] == [(1, 5)]
    with db.transaction() as session:
        session.execute(text("DELETE FROM transfers"))
        session.execute(text("DELETE FROM payment_logs"))
        session.execute(text("DELETE FROM payments"))
    assert [(d.payments, d.usdt) for d in stored_days(db)] == [(0, 0)]


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


def test_concurrent_creates_write_rows_of_their_own_and_folding_keeps_the_sums(db) -> None:  # type: ignore[no-untyped-def]
    """Two transactions creating payments on the same day at once: neither waits for the other (each backend adds to
    its own row), and folding the past days' rows changes no day's total."""
    first, second = db.engine.connect(), db.engine.connect()
    try:
        first.begin()
        second.begin()
        for conn in (first, second):
            conn.execute(text("SET LOCAL lock_timeout = '1s'"))  # a wait on the other's row would fail here
        with db.Session(bind=first) as session:
            add_payment(session, created_ago=timedelta(days=2))
            session.flush()
        with db.Session(bind=second) as session:
            add_payment(session, created_ago=timedelta(days=2))
            add_payment(session, created_ago=timedelta(seconds=1))
            session.flush()
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()
    today = datetime.now(UTC).date()
    with db.Session() as session:
        before = last_days(session, today)
        assert session.scalar(select(func.count()).select_from(DailyTotal)
                              .where(DailyTotal.day == today - timedelta(days=2))) == 2
    compact(db.engine)
    with db.Session() as session:
        assert last_days(session, today) == before
        assert [d.payments for d in before if d.day in (today - timedelta(days=2), today)] == [2, 1]
        assert set(session.scalars(select(DailyTotal.shard).where(DailyTotal.day < today))) == {0}
