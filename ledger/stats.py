"""Counting rows by status: what /stats, /health and `db_manager.py stats` report."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session


def count_by(session: Session, column: InstrumentedAttribute[Any]) -> dict[str, int]:
    """Rows per value of an enum column (a payment's status, an event's state...), every value listed, 0 included."""
    counts = {member.value: 0 for member in column.type.enum_class}
    for value, count in session.execute(select(column, func.count()).group_by(column)):
        counts[value.value] = count
    return counts
