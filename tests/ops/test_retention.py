"""Retention: the batched log cleanup, archive and restore (db_manager.py run as a real subprocess where the command
line matters), the tombstones an archived payment leaves, and the export's server-side cursor."""
from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from database import Database
from db_manager import build_parser
from infra.times import to_ms
from ledger.matching import credit_transfer
from ledger.records import TransferLog
from models import (
    ArchivedOrder,
    ArchivedTransfer,
    EventState,
    Payment,
    PaymentLog,
    PaymentStatus,
    Transfer,
    WebhookEvent,
)
from ops.export import stream_rows
from ops.records import delete_old_logs, rest_after
from ops.retention import PAYMENT_TABLES, delete_archived, write_file
from tests.conftest import PAYER, WALLET, assert_error, create, payment_body, set_fields
from tests.test_db_manager import ok, one_line_failure, run_cli

LATE_WINDOW = 86400  # the configuration's default: the CLI runs with it
LONG_AGO = timedelta(days=30)


# --- helpers -------------------------------------------------------------------------------------

def snapshot(db: Database) -> dict[str, list[str]]:
    """Every row of a payment's tables, exactly as PostgreSQL renders it (service notes, without a payment, aside)."""
    with db.engine.connect() as conn:
        conn.execute(text("SET TIME ZONE 'UTC'"))
        return {table.name: list(conn.execute(text(
            f"SELECT to_jsonb(t)::text FROM {table.name} t WHERE {key} IS NOT NULL ORDER BY 1")).scalars())
            for table, key in PAYMENT_TABLES}


def credit(db: Database, wallet: str, micro: int, at: datetime, tx: str | None = None) -> str:
    """A solidified transfer to `wallet` mined at `at`, credited as the watcher would."""
    tx = tx or uuid.uuid4().hex + uuid.uuid4().hex
    with db.transaction() as s:
        outcome = credit_transfer(s, TransferLog(tx, 0, PAYER, wallet, micro, 1000, to_ms(at)), LATE_WINDOW)
    assert outcome.result == "credited", outcome
    return tx


def age(db: Database, payment: dict[str, Any], **values: Any) -> None:
    """Move a payment into the past (creation, expiry, completion) and settle its events."""
    pid = uuid.UUID(payment["id"])
    with db.transaction() as s:
        row = s.get(Payment, pid)
        assert row is not None
        shift = LONG_AGO + timedelta(days=1)
        row.created_at -= shift
        row.expires_at -= shift
        if row.completed_at is not None:
            row.completed_at -= shift
        if row.cancelled_at is not None:
            row.cancelled_at -= shift
        for key, value in values.items():
            setattr(row, key, value)
        s.execute(update(WebhookEvent).where(WebhookEvent.payment_id == pid).values(state=EventState.delivered))


def paid_payment(client: Any, auth: dict[str, str], db: Database, amount: str, order_id: str,
                 wallet: str = WALLET) -> tuple[dict[str, Any], str]:
    """A payment created through the API, paid in full by a transfer, then aged out of its late window."""
    payment = create(client, auth, amount, order_id=order_id, wallet=wallet)
    tx = credit(db, wallet, int(Decimal(amount) * 1_000_000), datetime.now(UTC))
    age(db, payment)
    return payment, tx


def before_arg() -> str:
    return (datetime.now(UTC) - LONG_AGO).isoformat()


# --- cleanup-logs --------------------------------------------------------------------------------

def test_cleanup_deletes_only_older_logs_in_batches(db: Database, client: Any, auth: dict[str, str]) -> None:
    settled, _ = paid_payment(client, auth, db, "5", "settled")
    pending = create(client, auth, "6", order_id="pending")
    with db.transaction() as s:
        for i in range(7):
            s.add(PaymentLog(payment_id=uuid.UUID(settled["id"]), event_type="note", message=f"old {i}",
                             created_at=datetime.now(UTC) - timedelta(days=40, minutes=i)))
        s.add(PaymentLog(payment_id=uuid.UUID(pending["id"]), event_type="note", message="old pending",
                         created_at=datetime.now(UTC) - timedelta(days=40)))
        s.add(PaymentLog(payment_id=None, event_type="note", message="old service note",
                         created_at=datetime.now(UTC) - timedelta(days=40)))
        s.add(PaymentLog(payment_id=uuid.UUID(settled["id"]), event_type="note", message="recent",
                         created_at=datetime.now(UTC) - timedelta(days=29)))
    with db.Session() as s:
        before = set(s.scalars(select(PaymentLog.message)))
    progress: list[int] = []
    assert delete_old_logs(db, 30, dry_run=True) == 8
    assert delete_old_logs(db, 30, dry_run=False, batch_size=3, progress=progress.append) == 8
    assert progress == [3, 6, 8]  # three batches of at most 3 rows (the pending payment's row read, kept)
    with db.Session() as s:
        left = set(s.scalars(select(PaymentLog.message)))
    assert left == before - {f"old {i}" for i in range(7)} - {"old service note"}
    assert {"old pending", "recent"} <= left


def test_cleanup_rests_after_each_batch_in_proportion_to_it(db: Database, monkeypatch: Any) -> None:
    """Batches fill at most `duty` of the time: a batch that took longer (a database busy with the service) is
    followed by a longer rest, never shorter than `pause`."""
    assert rest_after(0.05, 0.1, 0.25) == pytest.approx(0.15)
    assert rest_after(0.01, 0.1, 0.25) == 0.1
    assert rest_after(0.2, 0.0, 0.5) == pytest.approx(0.2) and rest_after(0.2, 0.0, 1.0) == 0
    with db.transaction() as s:
        for i in range(5):
            s.add(PaymentLog(payment_id=None, event_type="note", message=f"old {i}",
                             created_at=datetime.now(UTC) - timedelta(days=40, minutes=i)))
    slept: list[float] = []
    monkeypatch.setattr("ops.records.time.sleep", slept.append)
    assert delete_old_logs(db, 30, dry_run=False, batch_size=2, pause=0.001, duty=0.01) == 5
    assert len(slept) == 3 and all(rest >= 0.001 for rest in slept)  # after each batch of 2, 2 and 1 rows
    assert max(slept) > 0.01  # 99 times a batch's own time: more than the pause for any real batch


def test_cleanup_options_are_checked(database_url: str, db: Database) -> None:
    parser = build_parser()
    for bad in (["--batch-size", "0"], ["--batch-size", "x"], ["--pause", "-1"], ["--pause", "nan"],
                ["--duty", "0"], ["--duty", "1.5"], ["--duty", "nan"], ["--duty", "x"]):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["cleanup-logs", "--days", "3", *bad])
        assert exited.value.code == 2
    assert parser.parse_args(["cleanup-logs", "--days", "3"]).duty == 0.01
    for bad in (["--before", "yesterday"], ["--before", "2026-13-01"], ["--before", "2026-01-01", "--batch-size", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["archive", "--file", "x", *bad])
    out = ok(run_cli(database_url, "cleanup-logs", "--days", "3", "--batch-size", "10", "--pause", "0.01"))
    assert out.startswith("deleted 0 payment log rows")


# --- archive and restore -------------------------------------------------------------------------

def test_archive_then_restore_gives_every_row_back(database_url: str, db: Database, client: Any,
                                                    auth: dict[str, str], tmp_path: Path) -> None:
    one, tx_one = paid_payment(client, auth, db, "10", "order-one")
    two, _ = paid_payment(client, auth, db, "11", "order-two")
    cancelled = create(client, auth, "12", order_id="order-cancelled")
    assert client.post(f"/payments/{cancelled['id']}/cancel", headers=auth).status_code == 200
    age(db, cancelled)
    recent = create(client, auth, "13", order_id="order-recent")  # created after the date: stays
    original = snapshot(db)
    target = tmp_path / "archive.jsonl.gz"

    out = ok(run_cli(database_url, "archive", "--before", before_arg(), "--file", str(target), "--batch-size", "2"))
    assert out.startswith("archived 3 payments created before"), out
    with db.Session() as s:
        assert set(s.scalars(select(Payment.order_id))) == {"order-recent"}
        assert set(s.scalars(select(ArchivedOrder.order_id))) == {"order-one", "order-two", "order-cancelled"}
        assert (tx_one, 0) in set(s.execute(select(ArchivedTransfer.transaction_hash, ArchivedTransfer.log_index)))
        assert s.scalar(select(Transfer.id).where(Transfer.transaction_hash == tx_one)) is None
        assert s.scalar(select(WebhookEvent.seq).where(WebhookEvent.payment_id == uuid.UUID(one["id"]))) is None
        assert s.scalars(select(PaymentLog.event_type).where(PaymentLog.payment_id.is_(None))).all() == [
            "archived", "archived"]  # one service note per batch of 2
    lines = gzip.decompress(target.read_bytes()).decode().splitlines()
    assert json.loads(lines[0])["format"] == "tron-usdt-monitor-archive"
    trailer = json.loads(lines[-1])
    assert trailer["end"] is True and trailer["payments"] == 3 and trailer["rows"]["transfers"] == 2
    assert {json.loads(line)["row"]["order_id"] for line in lines if '"table":"payments"' in line} == {
        "order-one", "order-two", "order-cancelled"}
    assert client.get(f"/payments/{two['id']}", headers=auth).status_code == 404

    out = ok(run_cli(database_url, "restore", "--file", str(target)))
    assert out.startswith("restored 3 payments from"), out
    assert snapshot(db) == original  # every row of every table, column for column
    with db.Session() as s:
        assert s.scalar(select(ArchivedOrder.order_id)) is None
        assert s.scalar(select(ArchivedTransfer.log_index)) is None
    assert client.get(f"/payments/{recent['id']}", headers=auth).status_code == 200
    again = ok(run_cli(database_url, "restore", "--file", str(target)))
    assert again.startswith("restored 0 payments") and "3 already present" in again
    assert snapshot(db) == original


def test_dry_run_changes_nothing(database_url: str, db: Database, client: Any, auth: dict[str, str],
                                 tmp_path: Path) -> None:
    paid_payment(client, auth, db, "10", "order-one")
    original = snapshot(db)
    out = ok(run_cli(database_url, "archive", "--before", before_arg(), "--dry-run", "--file",
                     str(tmp_path / "a.gz")))
    assert out.startswith("would archive 1 payments created before") and "1 payments" in out
    assert snapshot(db) == original
    assert not (tmp_path / "a.gz").exists()
    with db.Session() as s:
        assert s.scalar(select(ArchivedOrder.order_id)) is None


def test_refuses_payments_in_their_late_window_or_with_undelivered_events(
        database_url: str, db: Database, client: Any, auth: dict[str, str], tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired_late = create(client, auth, "1", order_id="expired-in-window")
    age(db, expired_late, status=PaymentStatus.expired, expires_at=now - timedelta(hours=2))  # window: 24 h
    completed_late, _ = paid_payment(client, auth, db, "2", "completed-in-window")
    set_fields(db, completed_late, completed_at=now - timedelta(hours=1))
    waiting, _ = paid_payment(client, auth, db, "3", "event-pending")
    failed, _ = paid_payment(client, auth, db, "4", "event-failed")
    with db.transaction() as s:
        s.execute(update(WebhookEvent).where(WebhookEvent.payment_id == uuid.UUID(waiting["id"]))
                  .values(state=EventState.pending))
        s.execute(update(WebhookEvent).where(WebhookEvent.payment_id == uuid.UUID(failed["id"]))
                  .values(state=EventState.failed))
    still_open = create(client, auth, "5", order_id="still-pending")
    age(db, still_open, expires_at=now + timedelta(hours=1))
    paid_payment(client, auth, db, "6", "archivable")
    original = {k: v for k, v in snapshot(db).items()}

    dry = ok(run_cli(database_url, "archive", "--before", before_arg(), "--dry-run"))
    assert dry.startswith("would archive 1 payments")
    for line in ("kept 1 payment still pending", "kept 2 payments inside the late window",
                 "kept 2 payments with an undelivered webhook event"):
        assert line in dry, dry
    out = ok(run_cli(database_url, "archive", "--before", before_arg(), "--file", str(tmp_path / "a.gz")))
    assert out.startswith("archived 1 payments")
    with db.Session() as s:
        assert set(s.scalars(select(ArchivedOrder.order_id))) == {"archivable"}
        assert set(s.scalars(select(Payment.order_id))) == {"expired-in-window", "completed-in-window",
                                                             "event-pending", "event-failed", "still-pending"}
    assert len(snapshot(db)["payments"]) == len(original["payments"]) - 1


def test_archive_never_overwrites_and_restore_refuses_a_partial_file(
        database_url: str, db: Database, client: Any, auth: dict[str, str], tmp_path: Path) -> None:
    paid_payment(client, auth, db, "10", "order-one")
    existing = tmp_path / "taken.gz"
    existing.write_bytes(b"something precious")
    line = one_line_failure(run_cli(database_url, "archive", "--before", before_arg(), "--file", str(existing)))
    assert "never overwrites" in line and existing.read_bytes() == b"something precious"
    assert one_line_failure(run_cli(database_url, "archive", "--before", before_arg())).startswith("error: archive "
                                                                                                   "needs --file")
    target = tmp_path / "a.gz"
    ok(run_cli(database_url, "archive", "--before", before_arg(), "--file", str(target)))
    whole = gzip.decompress(target.read_bytes()).decode().splitlines()
    cut = tmp_path / "cut.gz"
    with gzip.open(cut, "wt") as out:
        out.write("\n".join(whole[:-1]) + "\n")  # no trailer: as if the writer had died
    line = one_line_failure(run_cli(database_url, "restore", "--file", str(cut)))
    assert "not a whole archive" in line
    cut.write_bytes(target.read_bytes()[:-20])  # a torn gzip stream
    assert "cannot be read whole" in one_line_failure(run_cli(database_url, "restore", "--file", str(cut)))
    with db.Session() as s:
        assert s.scalar(select(Payment.id)) is None  # nothing restored from either


def test_a_payment_changed_after_the_file_was_written_is_kept(db: Database, client: Any, auth: dict[str, str],
                                                                tmp_path: Path) -> None:
    one, _ = paid_payment(client, auth, db, "10", "order-one")
    paid_payment(client, auth, db, "11", "order-two")
    target = tmp_path / "a.gz"
    before = datetime.now(UTC) - LONG_AGO
    assert write_file(db.engine, target, before, LATE_WINDOW, "test", 10)[0] == 2
    with db.transaction() as s:  # e.g. a late log row written between the file and the deletes
        s.add(PaymentLog(payment_id=uuid.UUID(one["id"]), event_type="note", message="after the file"))
    outcome = delete_archived(db.engine, target, LATE_WINDOW)
    assert (outcome.archived, outcome.changed) == (1, 1)
    with db.Session() as s:
        assert set(s.scalars(select(Payment.order_id))) == {"order-one"}
        assert set(s.scalars(select(ArchivedOrder.order_id))) == {"order-two"}


# --- tombstones ----------------------------------------------------------------------------------

def test_tombstones_keep_an_archived_order_id_and_transfer_taken(
        database_url: str, db: Database, client: Any, auth: dict[str, str], tmp_path: Path) -> None:
    archived, tx = paid_payment(client, auth, db, "10", "order-archived")
    target = tmp_path / "a.gz"
    ok(run_cli(database_url, "archive", "--before", before_arg(), "--file", str(target)))

    replay = client.post("/payments", json=payment_body(expected_amount_usdt="10", order_id="order-archived"),
                         headers=auth)
    assert assert_error(replay, 409, "order_id")["error"] == "archived"
    other = client.post("/payments", json=payment_body(expected_amount_usdt="99", order_id="order-archived"),
                        headers=auth)
    assert assert_error(other, 409, "order_id")["error"] == "archived"
    priced = client.post("/payments", json=payment_body(expected_amount_usdt=None, price_amount="9",
                                                        price_currency="EUR", order_id="order-archived"),
                         headers=auth)
    assert assert_error(priced, 409, "order_id")["error"] == "archived"

    # A new payment on the same wallet awaits the same amount, open since before the archived transfer's block:
    # the transfer listed again would credit it, were it not remembered.
    waiting = create(client, auth, "10", order_id="order-new")
    set_fields(db, waiting, created_at=datetime.now(UTC) - timedelta(hours=2))
    block_time = datetime.now(UTC) - timedelta(hours=1)
    with db.transaction() as s:
        outcome = credit_transfer(s, TransferLog(tx, 0, PAYER, WALLET, 10_000_000, 1000, to_ms(block_time)),
                                  LATE_WINDOW)
    assert outcome.result == "duplicate"
    assert client.get(f"/payments/{waiting['id']}", headers=auth).get_json()["status"] == "pending"
    with db.Session() as s:
        assert s.scalar(select(Transfer.id).where(Transfer.transaction_hash == tx)) is None

    set_fields(db, waiting, status=PaymentStatus.failed, failure_reason="cancelled",
               cancelled_at=datetime.now(UTC))
    ok(run_cli(database_url, "restore", "--file", str(target)))
    again = client.post("/payments", json=payment_body(expected_amount_usdt="10", order_id="order-archived"),
                        headers=auth)
    assert again.status_code == 200 and again.get_json()["id"] == archived["id"]  # a replay once more


# --- export --------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", [Payment.__table__, PaymentLog.__table__])
def test_export_reads_through_a_server_side_cursor(db: Database, client: Any, auth: dict[str, str],
                                                   table: Any) -> None:
    for i in range(3):
        create(client, auth, f"{i + 1}", order_id=f"order-{i}")
    with db.engine.connect() as conn:
        rows = stream_rows(conn, table, [table.c.id])
        first = next(rows)
        # the rows come from a cursor held open on the server, fetched a batch at a time, not loaded at once
        open_cursors = conn.execute(text("SELECT statement FROM pg_cursors")).scalars().all()
        assert any(f"FROM {table.name}" in statement for statement in open_cursors if "pg_cursors" not in statement)
        assert len([first, *rows]) == 3
