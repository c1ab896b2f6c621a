"""The chart's numbers: payments created and USDT credited per UTC day (daily_totals, kept by triggers)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import DailyTotal


@dataclass(frozen=True)
class Day:
    day: date
    payments: int
    usdt: Decimal


def last_days(session: Session, today: date, days: int = 30) -> list[Day]:
    """Every day of the `days` up to `today` (UTC), oldest first, a day without payments included."""
    first = today - timedelta(days=days - 1)
    stored = {row.day: row for row in session.scalars(
        select(DailyTotal).where(DailyTotal.day >= first, DailyTotal.day <= today))}
    return [Day(d, stored[d].payments_created if d in stored else 0,
                stored[d].usdt_credited if d in stored else Decimal(0))
            for d in (first + timedelta(days=n) for n in range(days))]
