"""`db_manager.py export`: the payments, transfers, webhook events and audit log as one JSON document, from one
consistent snapshot, streamed. API keys and stored secrets are never exported."""
from __future__ import annotations

import errno
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from enum import Enum as PyEnum
from pathlib import Path
from typing import IO, Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Table, func, select
from sqlalchemy.engine import Connection, Engine

from infra.money import format_amount
from infra.times import iso
from models import Payment, PaymentLog, Transfer, WebhookEvent

EXPORT_FORMAT = "tron-usdt-monitor-export"
EXPORT_VERSION = 1


def json_value(value: Any) -> Any:
    """Money as plain decimal strings, UUIDs and times as strings, enums as their values."""
    if isinstance(value, Decimal):
        return format_amount(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, PyEnum):
        return value.value
    return value


def export_tables() -> list[tuple[str, Table, list[Any]]]:
    return [
        ("payments", Payment.__table__, [Payment.__table__.c.created_at, Payment.__table__.c.id]),
        ("transfers", Transfer.__table__, [Transfer.__table__.c.id]),
        ("webhook_events", WebhookEvent.__table__, [WebhookEvent.__table__.c.seq]),
        ("payment_logs", PaymentLog.__table__, [PaymentLog.__table__.c.id]),
    ]


def stream_rows(conn: Connection, table: Table, order_by: list[Any]) -> Iterator[dict[str, Any]]:
    result = conn.execution_options(stream_results=True, yield_per=1000).execute(select(table).order_by(*order_by))
    for row in result.mappings():
        yield {key: json_value(value) for key, value in row.items()}


def write_export(conn: Connection, out: IO[str], database: str) -> dict[str, int]:
    exported_at = conn.execute(select(func.now())).scalar_one()
    header = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": json_value(exported_at),
        "database": database,
        "schema_revision": MigrationContext.configure(conn).get_current_revision(),
    }
    out.write("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in header.items()))
    counts: dict[str, int] = {}
    for name, table, order_by in export_tables():
        out.write(f',\n  "{name}": [')
        count = 0
        for row in stream_rows(conn, table, order_by):
            out.write(("," if count else "") + "\n    " + json.dumps(row, ensure_ascii=False))
            count += 1
        out.write("\n  ]" if count else "]")
        counts[name] = count
    out.write(",\n  \"counts\": " + json.dumps(counts) + "\n}\n")
    return counts


def export_snapshot(engine: Engine, out: IO[str], database: str) -> dict[str, int]:
    """One consistent snapshot (REPEATABLE READ, read only) of `engine`'s database, streamed to `out`."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            return write_export(conn, out, database)


def export_to_file(engine: Engine, target: Path, database: str) -> dict[str, int]:
    """The snapshot into a 0600 file that replaces `target` only once complete (OSError when it cannot)."""
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise OSError(errno.ENOENT, f"directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            counts = export_snapshot(engine, out, database)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts
