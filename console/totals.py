"""The chart's numbers: payments created and USDT credited per UTC day (daily_totals, kept by triggers).

Each backend adds to rows of its own (`shard`, its pid: migration 0014), so a day is the sum of its rows; when they
pile up a read folds the past days' rows into one, as the row counts do (ledger/stats.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models import DailyTotal

logger = logging.getLogger(__name__)

# Beyond this many rows in the days read (one per backend that wrote on each day) a read folds the past days.
COMPACT_ABOVE = 2000


@dataclass(frozen=True)
class Day:
    day: date
    payments: int
    usdt: Decimal


def last_days(session: Session, today: date, days: int = 30) -> list[Day]:
    """Every day of the `days` up to `today` (UTC), oldest first, a day without payments included."""
    first = today - timedelta(days=days - 1)
    rows = session.execute(
        select(DailyTotal.day, func.sum(DailyTotal.payments_created), func.sum(DailyTotal.usdt_credited), func.count())
        .where(DailyTotal.day >= first, DailyTotal.day <= today).group_by(DailyTotal.day)).all()
    if sum(row[3] for row in rows) > COMPACT_ABOVE:
        bind = session.get_bind()
        compact(bind if isinstance(bind, Engine) else bind.engine)
    stored = {day: (int(payments), Decimal(usdt)) for day, payments, usdt, _ in rows}
    return [Day(d, *stored.get(d, (0, Decimal(0)))) for d in (first + timedelta(days=n) for n in range(days))]


def compact(engine: Engine) -> int:
    """Fold every backend's rows of the days before today into one row a day, in a short transaction that waits for
    nobody; returns the rows folded."""
    with engine.begin() as conn:
        folded = int(conn.execute(text("SELECT daily_totals_compact()")).scalar_one())
    logger.info("daily totals: %d rows folded", folded)
    return folded
