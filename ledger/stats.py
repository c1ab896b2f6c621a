"""Counting rows by status: what /stats, /health, /metrics and `db_manager.py stats` report.

The counts are not counted on request: the database's triggers keep them in `row_counts` (migration 0011), in the
transaction of each change, so a read is a sum over a few hundred rows whatever the size of the tables, and exact
(the same snapshot as the rows it counts). Keys: `payments:<status>`, `payments:cancelled`,
`transfers:<status>:<found_by>`, `webhook_events:<state>`, `rejected_transfers:<kind>`.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models import RowCount

logger = logging.getLogger(__name__)

# Beyond this many rows (a few per key for each backend that wrote since the last compaction) a read folds them.
COMPACT_ABOVE = 2000


@dataclass(frozen=True)
class Counts:
    """Every key's count at one snapshot."""

    by_key: dict[str, int]

    def of(self, key: str) -> int:
        return self.by_key.get(key, 0)

    def rows(self, table: str) -> list[tuple[tuple[str, ...], int]]:
        """The keys of `table`, each as its parts after the table's name (a transfer's status and found_by)."""
        return [(tuple(key.split(":")[1:]), n) for key, n in self.by_key.items() if key.split(":", 1)[0] == table]

    def by(self, table: str, values: type[enum.Enum]) -> dict[str, int]:
        """Rows of `table` per value of its status enum, every value listed (0 included); a key's further parts
        (a transfer's found_by) summed."""
        counts = {member.value: 0 for member in values}
        for parts, n in self.rows(table):
            if parts[0] in counts:
                counts[parts[0]] += n
        return counts


def read_counts(session: Session) -> Counts:
    """The counts at the session's snapshot. When the shards have piled up they are folded after the read, in a
    transaction of their own (the session's is left as it was)."""
    rows = session.execute(select(RowCount.key, func.sum(RowCount.n), func.count()).group_by(RowCount.key)).all()
    if sum(row[2] for row in rows) > COMPACT_ABOVE:
        bind = session.get_bind()
        compact(bind if isinstance(bind, Engine) else bind.engine)
    return Counts({key: int(n) for key, n, _ in rows})


def compact(engine: Engine) -> int:
    """Fold every backend's rows into shard 0, in a short transaction that waits for nobody (rows an open
    transaction holds are left for the next time); returns the rows folded."""
    with engine.begin() as conn:
        folded = int(conn.execute(text("SELECT row_counts_compact()")).scalar_one())
    logger.info("row counts: %d rows folded", folded)
    return folded

