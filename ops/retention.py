"""`db_manager.py archive` and `restore`: closed payments, with their logs, transfers and events, moved to a gzip
JSON Lines file and back.

The file: a header line, then each payment's rows (its `payments` row first, then its deposit address, transfers,
unconfirmed transfers, webhook events and audit rows), one line each, `{"table": ..., "row": ...}`, the row as
PostgreSQL's `to_jsonb` writes it (exact numerics, times in UTC with microseconds), then a trailer with the counts.
Restore gives each row back through `jsonb_populate_record`, so every column comes back as it was.

Crash safety: the file is written whole (a temporary file beside it, fsynced, then linked to its name, never over an
existing file, and the directory fsynced) before any row is deleted. The deletes then go batch by batch, each in
its own transaction that locks the batch's rows, checks that each payment's rows are still exactly the lines in
the file and that it may still be archived, writes the tombstones and deletes. A crash before or during the deletes
loses nothing: every payment is in the file, and those whose batch did not commit are still in the database too
(archive them again into a new file; restoring either file is idempotent). A payment changed since the file was
written is kept (it stays in the file as it was; restore skips a payment that exists).
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import ColumnElement, Table, Text, and_, delete, exists, func, insert, or_, select, text, tuple_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from infra.config import first_line
from infra.times import iso
from ledger.events import audit_values, log_audit
from ledger.matching import keeps_wallet_watched
from models import (
    ArchivedOrder,
    ArchivedTransfer,
    DepositAddress,
    EventState,
    Notification,
    Payment,
    PaymentLog,
    PaymentStatus,
    Transfer,
    UnconfirmedTransfer,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

ARCHIVE_FORMAT = "tron-usdt-monitor-archive"
ARCHIVE_VERSION = 1
BATCH_SIZE = 500
LOCK_TIMEOUT = "5s"  # a batch whose rows another transaction holds longer fails rather than queueing the API
# A payment's tables, in the order restore inserts them (the payments row first), each with its column naming the
# payment. A deleted payment takes the others with it (ON DELETE CASCADE), except its transfers (SET NULL: they are
# deleted first).
PAYMENT_TABLES: tuple[tuple[Table, str], ...] = (
    (Payment.__table__, "id"),
    (DepositAddress.__table__, "payment_id"),
    (Transfer.__table__, "payment_id"),
    (UnconfirmedTransfer.__table__, "payment_id"),
    (WebhookEvent.__table__, "payment_id"),
    (Notification.__table__, "payment_id"),
    (PaymentLog.__table__, "payment_id"),
)
UNDELIVERED = (EventState.pending, EventState.failed)  # never delivered, and may still be (retried)


class ArchiveError(Exception):
    """An archive or restore that cannot be done; the message is meant for a person."""


@dataclass
class Selection:
    """What `archive` finds before `before`: the payments it may archive, and those it must keep, by reason."""

    archivable: int = 0
    still_open: int = 0
    in_late_window: int = 0
    undelivered_event: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows of each table the archivable payments have


@dataclass
class Outcome:
    written: int = 0  # payments in the file
    archived: int = 0  # payments deleted (their tombstones written)
    changed: int = 0  # payments in the file but kept: changed, or no longer archivable, since written
    rows: dict[str, int] = field(default_factory=dict)


# --- what may be archived --------------------------------------------------------------------------

def undelivered_event() -> ColumnElement[bool]:
    """SQL: a webhook event, or an operator notification, of the payment not delivered (and still retriable)."""
    return or_(exists().where(WebhookEvent.payment_id == Payment.id, WebhookEvent.state.in_(UNDELIVERED)),
               exists().where(Notification.payment_id == Payment.id, Notification.state.in_(UNDELIVERED)))


def in_late_window(late_window: int) -> ColumnElement[bool]:
    """SQL: payments whose wallet is still watched for them now: they may take late money, or completed within the
    late window (the matching rules' own definition, `ledger.matching.keeps_wallet_watched`)."""
    window_start = func.now() - timedelta(seconds=late_window)
    return keeps_wallet_watched(lambda when: when >= window_start)


def archivable(late_window: int) -> ColumnElement[bool]:
    """SQL: closed payments outside their late window with every webhook event settled (delivered, superseded or
    with no target)."""
    return and_(Payment.status != PaymentStatus.pending, ~in_late_window(late_window), ~undelivered_event())


def select_before(connection: Connection, before: datetime, late_window: int) -> Selection:
    """Count the payments created before `before`: those `archive` would move, and those it keeps and why."""
    older = Payment.created_at < before
    count = func.count()
    row = connection.execute(select(
        count.filter(archivable(late_window)),
        count.filter(Payment.status == PaymentStatus.pending),
        count.filter(Payment.status != PaymentStatus.pending, in_late_window(late_window)),
        count.filter(Payment.status != PaymentStatus.pending, ~in_late_window(late_window), undelivered_event()),
    ).where(older)).one()
    chosen = select(Payment.id).where(older, archivable(late_window))
    rows = {table.name: connection.execute(select(func.count()).select_from(table)
                                           .where(table.c[key].in_(chosen))).scalar_one()
            for table, key in PAYMENT_TABLES}
    return Selection(row[0], row[1], row[2], row[3], rows)


def archivable_batches(engine: Engine, before: datetime, late_window: int, size: int) -> Iterator[list[uuid.UUID]]:
    """The archivable payments created before `before`, oldest first, `size` ids at a time (keyset: each batch is one
    short query on the creation index)."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        query = select(Payment.created_at, Payment.id).where(Payment.created_at < before, archivable(late_window))
        if after is not None:  # (the first condition gives the index its range, the second the exact position)
            query = query.where(Payment.created_at >= after[0], tuple_(Payment.created_at, Payment.id) > tuple_(*after))
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(Payment.created_at, Payment.id).limit(size)).all()
        if not rows:
            return
        after = tuple(rows[-1])  # type: ignore[assignment]
        yield [row[1] for row in rows]


# --- the lines ---------------------------------------------------------------------------------------

def rendered(connection: Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Each payment's lines, as the file holds them: its `payments` row first, then its other rows table by table,
    each table's by primary key."""
    lines: dict[uuid.UUID, list[str]] = {pid: [] for pid in ids}
    for table, key in PAYMENT_TABLES:
        alias = table.alias("r")
        json_row = func.to_jsonb(text("r")).cast(Text())
        order = [alias.c[c.name] for c in table.primary_key.columns]
        query = select(alias.c[key], json_row).where(alias.c[key].in_(ids)).order_by(*order)
        for pid, row in connection.execute(query):
            lines[pid].append(f'{{"table":"{table.name}","row":{row}}}')
    return lines


def utc(connection: Connection) -> Connection:
    """Times written as UTC whatever the server's TimeZone, so a file reads the same wherever it was made."""
    connection.execute(text("SET TIME ZONE 'UTC'"))
    return connection


# --- the file --------------------------------------------------------------------------------------

def header(connection: Connection, before: datetime, database: str) -> dict[str, Any]:
    return {"format": ARCHIVE_FORMAT, "version": ARCHIVE_VERSION,
            "created_at": iso(connection.execute(select(func.now())).scalar_one()),
            "before": iso(before), "database": database,
            "schema_revision": MigrationContext.configure(connection).get_current_revision()}


def write_file(engine: Engine, target: Path, before: datetime, late_window: int, database: str, size: int
               ) -> tuple[int, dict[str, int]]:
    """Write every archivable payment to `target` (refused when it exists), complete and on disk before it returns:
    (payments, rows per table)."""
    directory = target.parent if str(target.parent) else Path(".")
    if target.exists():
        raise ArchiveError(f"{target} exists: archive never overwrites a file (it may hold deleted payments)")
    if not directory.is_dir():
        raise ArchiveError(f"directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")  # created 0600
    payments, rows = 0, {table.name: 0 for table, _ in PAYMENT_TABLES}
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as out:
                with engine.connect() as conn:
                    out.write((json.dumps(header(utc(conn), before, database)) + "\n").encode())
                for ids in archivable_batches(engine, before, late_window, size):
                    with engine.connect() as conn:
                        lines = rendered(utc(conn), ids)
                    for pid in ids:
                        if not lines[pid] or '"table":"payments"' not in lines[pid][0]:
                            continue  # deleted meanwhile
                        out.write(("\n".join(lines[pid]) + "\n").encode())
                        payments += 1
                        for line in lines[pid]:
                            rows[line[10:line.index('"', 10)]] += 1
                out.write((json.dumps({"end": True, "payments": payments, "rows": rows}) + "\n").encode())
            raw.flush()
            os.fsync(raw.fileno())
        os.link(tmp, target)  # fails if `target` appeared meanwhile: never replaced
        fsync_directory(directory)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return payments, rows


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def table_of(line: str) -> str:
    return str(json.loads(line)["table"])


def read_groups(path: Path) -> Iterator[tuple[uuid.UUID, list[str]]]:
    """Each payment's lines of an archive file, in file order; ArchiveError when the file is not one, or not whole
    (no trailer, or counts that differ from what it holds)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            head = json.loads(next(lines, "null") or "null")
            if not isinstance(head, dict) or head.get("format") != ARCHIVE_FORMAT:
                raise ArchiveError(f"{path} is not an archive of this service")
            if head.get("version") != ARCHIVE_VERSION:
                raise ArchiveError(f"{path} is an archive of version {head.get('version')}, not {ARCHIVE_VERSION}")
            yield from groups_of(path, lines)
    except (OSError, EOFError, gzip.BadGzipFile, json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
        raise ArchiveError(f"{path} cannot be read whole: {exc}") from None


def groups_of(path: Path, lines: Iterator[str]) -> Iterator[tuple[uuid.UUID, list[str]]]:
    group: list[str] = []
    pid: uuid.UUID | None = None
    payments = 0
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith('{"end"'):
            trailer = json.loads(line)
            if pid is not None:
                yield pid, group
            if trailer["payments"] != payments + (pid is not None):
                raise ArchiveError(f"{path} holds {payments} payments, its trailer says {trailer['payments']}")
            return
        if line.startswith('{"table":"payments"'):
            if pid is not None:
                yield pid, group
                payments += 1
            pid, group = uuid.UUID(json.loads(line)["row"]["id"]), [line]
        elif pid is None:
            raise ArchiveError(f"{path}: a row before any payment")
        else:
            group.append(line)
    raise ArchiveError(f"{path} ends without its trailer: it is not a whole archive")


def batched(groups: Iterator[tuple[uuid.UUID, list[str]]], size: int) -> Iterator[dict[uuid.UUID, list[str]]]:
    batch: dict[uuid.UUID, list[str]] = {}
    for pid, lines in groups:
        batch[pid] = lines
        if len(batch) >= size:
            yield batch
            batch = {}
    if batch:
        yield batch


# --- archive -------------------------------------------------------------------------------------

def lock_batch(connection: Connection, ids: list[uuid.UUID]) -> None:
    """Hold the batch's payments, events and transfers until the transaction ends (in id order: no deadlock between
    two archives), within LOCK_TIMEOUT."""
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    connection.execute(select(Payment.id).where(Payment.id.in_(ids)).order_by(Payment.id).with_for_update())
    for model in (WebhookEvent, Notification, Transfer):
        connection.execute(select(model.payment_id).where(model.payment_id.in_(ids)).with_for_update())


def delete_batch(connection: Connection, batch: dict[uuid.UUID, list[str]], late_window: int, target: Path) -> int:
    """In the caller's transaction: the batch's payments still exactly as in the file and still archivable get their
    tombstones and are deleted; the number deleted."""
    ids = sorted(batch)
    lock_batch(connection, ids)
    now = rendered(utc(connection), ids)
    still = set(connection.execute(select(Payment.id).where(Payment.id.in_(ids), archivable(late_window))).scalars())
    chosen = [pid for pid in ids if pid in still and now[pid] == batch[pid]]
    for pid in set(ids) - set(chosen):
        logger.warning("payment %s changed since it was written to %s, or may no longer be archived: kept", pid,
                       target)
    if not chosen:
        return 0
    connection.execute(insert(ArchivedOrder).from_select(
        ["order_id", "payment_id"], select(Payment.order_id, Payment.id).where(Payment.id.in_(chosen))))
    connection.execute(insert(ArchivedTransfer).from_select(
        ["transaction_hash", "log_index", "payment_id"],
        select(Transfer.transaction_hash, Transfer.log_index, Transfer.payment_id)
        .where(Transfer.payment_id.in_(chosen), Transfer.log_index.is_not(None))))
    connection.execute(delete(Transfer).where(Transfer.payment_id.in_(chosen)))
    connection.execute(delete(Payment).where(Payment.id.in_(chosen)))
    note(connection, "archived", f"{len(chosen)} payments archived to {target.name}, with their logs, transfers and "
                                 "events; their order ids and transfers stay taken", payments=len(chosen),
         file=str(target))
    return len(chosen)


def note(connection: Connection, event_type: str, message: str, **metadata: Any) -> None:
    """A service audit row (no payment) in the caller's transaction."""
    values = audit_values(None, event_type, message, **metadata)
    connection.execute(insert(PaymentLog).values(values))
    log_audit(values)


def archive(engine: Engine, target: Path, before: datetime, late_window: int, database: str,
            size: int = BATCH_SIZE) -> Outcome:
    """Write the archivable payments created before `before` to `target`, then delete them batch by batch."""
    written, rows = write_file(engine, target, before, late_window, database, size)
    return delete_archived(engine, target, late_window, size, Outcome(written=written, rows=rows))


def delete_archived(engine: Engine, target: Path, late_window: int, size: int = BATCH_SIZE,
                    outcome: Outcome | None = None) -> Outcome:
    """The second step of `archive`: delete, batch by batch, the payments of the whole file `target` that are still
    exactly as written."""
    outcome = outcome or Outcome()
    for batch in batched(read_groups(target), size):
        with engine.begin() as conn:
            deleted = delete_batch(conn, batch, late_window, target)
        outcome.archived += deleted
        outcome.changed += len(batch) - deleted
    return outcome


# --- restore -------------------------------------------------------------------------------------

@dataclass
class Restored:
    payments: int = 0
    present: int = 0  # already in the database: skipped
    rows: dict[str, int] = field(default_factory=dict)


def check_file(path: Path) -> int:
    """Read the whole file once (gzip's checksums, the trailer's counts) before anything is written: the payments."""
    return sum(1 for _ in read_groups(path))


def insert_rows(connection: Connection, table: Table, lines: list[str]) -> None:
    """INSERT the rows of `table` from their lines, every column the file and the table both have (a column added
    since keeps its default)."""
    keys = json.loads(lines[0])["row"].keys()
    columns = [c.name for c in table.columns if c.name in keys]
    names = ", ".join(f'"{c}"' for c in columns)
    connection.execute(text(
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM unnest(CAST(:lines AS text[])) AS l(line), '
        f'LATERAL jsonb_populate_record(NULL::"{table.name}", CAST(l.line AS jsonb) -> \'row\') AS r'),
        {"lines": lines})


def restore_batch(connection: Connection, batch: dict[uuid.UUID, list[str]], source: Path) -> Restored:
    present = set(connection.execute(select(Payment.id).where(Payment.id.in_(list(batch)))).scalars())
    todo = [pid for pid in batch if pid not in present]
    done = Restored(present=len(present))
    if not todo:
        return done
    by_table: dict[str, list[str]] = {}
    for pid in todo:
        for line in batch[pid]:
            by_table.setdefault(table_of(line), []).append(line)
    for table, _ in PAYMENT_TABLES:
        if by_table.get(table.name):
            insert_rows(connection, table, by_table[table.name])
            done.rows[table.name] = len(by_table[table.name])
    connection.execute(delete(ArchivedOrder).where(ArchivedOrder.payment_id.in_(todo)))
    connection.execute(delete(ArchivedTransfer).where(ArchivedTransfer.payment_id.in_(todo)))
    note(connection, "restored", f"{len(todo)} payments restored from {source.name}", payments=len(todo),
         file=str(source))
    done.payments = len(todo)
    return done


def restore(engine: Engine, source: Path, size: int = BATCH_SIZE) -> Restored:
    """Bring back the payments of an archive file that are not in the database (idempotent), batch by batch."""
    check_file(source)
    total = Restored()
    for batch in batched(read_groups(source), size):
        try:
            with engine.begin() as conn:
                done = restore_batch(conn, batch, source)
        except IntegrityError as exc:  # e.g. an order_id whose tombstone was removed by hand, then used again
            raise ArchiveError(f"cannot restore payments of {source} ({total.payments} restored before this batch): "
                               f"{first_line(exc.orig)}") from None
        total.payments += done.payments
        total.present += done.present
        for name, n in done.rows.items():
            total.rows[name] = total.rows.get(name, 0) + n
    return total
