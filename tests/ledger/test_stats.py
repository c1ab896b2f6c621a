"""The row counts the database keeps (ledger/stats.py, migration 0011): equal to SELECT count(*) after concurrent
creates, credits, unmatched transfers, expiries, cancellations and assignments, each in its own transaction; no
row every writer updates; folding the shards changes no count; /health, /stats and /metrics answer them; the
migration counts the rows already there."""
from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, func, select, text

import migrate
from infra.config import Config
from ledger.matching import assign_transfer, credit_transfer, expire_due
from ledger.records import TransferLog
from ledger.stats import Counts, compact, read_counts
from models import (
    CANCELLED,
    EventState,
    PaymentStatus,
    RowCount,
    TransferStatus,
)
from tests.conftest import PAYER, WALLET, WALLET_B, create

WALLET_C = "TNPeeaaFB7K9cmo4uQpcU32zGK8G1NYqeL"  # its payments are left to expire


def counted_by_scan(db: Any) -> dict[str, int]:
    """What the counts must be: the tables counted, key by key."""
    with db.Session() as s:
        rows = s.execute(text(
            "SELECT 'payments:' || status, count(*) FROM payments GROUP BY 1 "
            "UNION ALL SELECT 'payments:cancelled', count(*) FROM payments WHERE failure_reason = 'cancelled' "
            "UNION ALL SELECT 'transfers:' || status || ':' || found_by, count(*) FROM transfers GROUP BY 1 "
            "UNION ALL SELECT 'webhook_events:' || state, count(*) FROM webhook_events GROUP BY 1 "
            "UNION ALL SELECT 'notifications:' || state, count(*) FROM notifications GROUP BY 1")).all()
    return {key: n for key, n in rows if n}


def kept(db: Any) -> dict[str, int]:
    with db.Session() as s:
        return {key: n for key, n in read_counts(s).by_key.items() if n}


def run_together(*jobs: Callable[[], None]) -> None:
    """Each job in its own thread, started together; a job's exception fails the test."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], None]) -> None:
        try:
            start.wait()
            job()
        except BaseException as exc:  # noqa: BLE001  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def transfer(wallet: str, micro: int) -> TransferLog:
    return TransferLog(secrets.token_hex(32), 0, PAYER, wallet, micro, 1, int(time.time() * 1000) + 1000)


def creator(app: Any, auth: dict[str, str], wallet: str, amounts: list[str], made: list[dict[str, Any]],
            **extra: Any) -> Callable[[], None]:
    def job() -> None:
        client = app.test_client()  # one per thread
        made.extend(create(client, auth, amount, wallet=wallet, **extra) for amount in amounts)
    return job


def test_counts_stay_exact_under_concurrent_changes_of_every_kind(app, client, auth, db, config: Config) -> None:
    late = config.late_payment_window_seconds
    paid: list[dict[str, Any]] = []
    stray_targets: list[dict[str, Any]] = []
    cancelled: list[dict[str, Any]] = []
    expiring: list[dict[str, Any]] = []
    run_together(creator(app, auth, WALLET, [f"{10 + i}" for i in range(12)], paid),
                 creator(app, auth, WALLET, [f"{50 + i}" for i in range(6)], stray_targets),
                 creator(app, auth, WALLET_B, [f"{20 + i}" for i in range(12)], cancelled),
                 creator(app, auth, WALLET_C, [f"{30 + i}" for i in range(12)], expiring, expires_in_seconds=60))
    assert kept(db) == counted_by_scan(db)
    assert kept(db)["payments:pending"] == 42

    def credit(log: TransferLog) -> None:
        with db.transaction() as s:
            credit_transfer(s, log, late)

    def credits() -> None:  # each pays its payment exactly: completed
        for p in paid:
            credit(transfer(WALLET, int(p["expected_amount_usdt"]) * 1_000_000))

    strays = [transfer(WALLET, 1_000_000 + i) for i in range(6)]  # several candidates, none awaits it: unmatched

    def unmatched() -> None:
        for log in strays:
            credit(log)

    def cancellations() -> None:
        client = app.test_client()
        for p in cancelled:
            assert client.post(f"/payments/{p['id']}/cancel", headers=auth).status_code == 200

    def expiries() -> None:
        for _ in range(3):
            with db.transaction() as s:
                expire_due(s, [WALLET_C], int(time.time() * 1000) + 3_600_000, limit=4)

    run_together(credits, unmatched, cancellations, expiries,
                 creator(app, auth, WALLET_B, [f"{70 + i}" for i in range(10)], []))
    assert kept(db) == counted_by_scan(db)

    def assignments() -> None:
        for log, p in zip(strays, stray_targets, strict=True):
            with db.transaction() as s:
                assign_transfer(s, log.transaction_hash, 0, uuid.UUID(p["id"]), late)

    run_together(assignments, creator(app, auth, WALLET_C, [f"{90 + i}" for i in range(10)], []))
    counts = kept(db)
    assert counts == counted_by_scan(db)
    assert counts["payments:completed"] == 12 and counts["payments:failed"] == counts["payments:cancelled"] == 12
    assert counts["payments:expired"] == 12 and counts["transfers:credited:scan"] == 18
    assert "transfers:unmatched:scan" not in counts  # every stray assigned
    with db.Session() as s:
        assert s.scalar(select(func.count(func.distinct(RowCount.shard)))) > 1  # no one row every writer updates


def test_folding_the_shards_changes_no_count(app, auth, db) -> None:
    run_together(*(creator(app, auth, wallet, [f"{i}.5" for i in range(1, 6)], []) for wallet in (WALLET, WALLET_B)))
    before = kept(db)
    compact(db.engine)
    with db.Session() as s:
        assert set(s.scalars(select(RowCount.shard))) == {0}
    assert kept(db) == before == counted_by_scan(db)


def test_a_read_folds_the_shards_once_they_pile_up(db, monkeypatch) -> None:
    import ledger.stats

    with db.transaction() as s:  # rows as many backends would leave them
        s.execute(text("INSERT INTO row_counts (key, shard, n) SELECT 'payments:pending', g, 1 "
                       "FROM generate_series(1, 30) g"))
    monkeypatch.setattr(ledger.stats, "COMPACT_ABOVE", 10)
    with db.Session() as s:
        assert read_counts(s).of("payments:pending") == 30
    with db.Session() as s:
        assert s.execute(select(RowCount.shard, RowCount.n)).all() == [(0, 30)]


def test_operator_routes_answer_the_kept_counts(client, auth, db) -> None:
    for amount in ("1", "2", "3"):
        create(client, auth, amount)
    doomed = create(client, auth, "4", wallet=WALLET_B)
    assert client.post(f"/payments/{doomed['id']}/cancel", headers=auth).status_code == 200
    with db.transaction() as s:  # a failed event, written behind the API's back: the trigger counts it too
        s.execute(text("UPDATE webhook_events SET state = 'failed' WHERE payment_id = :p"), {"p": doomed["id"]})
    expected = counted_by_scan(db)
    stats = client.get("/stats").get_json()
    assert stats["total_payments"] == 4 and stats["pending_payments"] == expected["payments:pending"] == 3
    assert stats["failed_payments"] == 1 and stats["webhooks_failed"] == expected["webhook_events:failed"]
    assert stats["webhooks_pending"] == expected.get("webhook_events:pending", 0)
    health = client.get("/health").get_json()
    assert health["active_payments"] == 3 and health["total_payments"] == 4
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'tron_usdt_payments{status="pending"} 3.0' in metrics
    assert 'tron_usdt_payments{status="failed"} 1.0' in metrics
    assert "tron_usdt_payments_created_total 4.0" in metrics


def test_notifications_are_counted_and_recounted(db) -> None:
    with db.transaction() as s:  # the outbox as the dispatcher and an archive change it, written directly
        s.execute(text("INSERT INTO notifications (id, event_type, target, scheme, title, body, state) "
                       "SELECT 'n' || g, 'payment.completed', 't', 'json', 'title', 'body', 'pending' "
                       "FROM generate_series(1, 5) g"))
        s.execute(text("UPDATE notifications SET state = 'delivered' WHERE id IN ('n1', 'n2')"))
        s.execute(text("UPDATE notifications SET state = 'failed' WHERE id = 'n3'"))
        s.execute(text("DELETE FROM notifications WHERE id = 'n4'"))
    assert kept(db) == counted_by_scan(db)
    assert {k: v for k, v in kept(db).items() if k.startswith("notifications:")} == {
        "notifications:pending": 1, "notifications:delivered": 2, "notifications:failed": 1}
    with db.transaction() as s:  # the recount made again by the notifications' migration counts them too
        s.execute(text("SELECT row_counts_recount()"))
    assert kept(db) == counted_by_scan(db)


def test_counts_by_status_list_every_value() -> None:
    counts = Counts({"payments:pending": 2, "payments:cancelled": 1, "transfers:credited:scan": 3,
                     "transfers:credited:reconciliation": 1, "webhook_events:pending": 0})
    assert counts.by("payments", PaymentStatus) == {"pending": 2, "completed": 0, "failed": 0, "expired": 0}
    assert counts.by("transfers", TransferStatus) == {"unmatched": 0, "credited": 4, "set_aside": 0}
    assert counts.by("webhook_events", EventState)["pending"] == 0
    assert counts.of(f"payments:{CANCELLED}") == 1


def test_the_migration_counts_the_rows_already_there(empty_url: str) -> None:
    from alembic import command

    migrate.upgrade_to_head(empty_url)
    cfg = migrate.alembic_config()
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0010_deposit_addresses")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO payments (id, order_id, wallet_address, expected_amount_usdt, requested_amount_usdt, "
                "status, failure_reason, callback_url, request_fingerprint, expires_at) "
                "SELECT gen_random_uuid(), 'o' || g, :w, 1, 1, CASE WHEN g % 3 = 0 THEN 'failed' ELSE 'pending' END"
                "::payment_status, CASE WHEN g % 3 = 0 THEN 'cancelled' END, 'https://x.example', 'f', now() "
                "FROM generate_series(1, 9) g"), {"w": WALLET})
        migrate.upgrade_to_head(empty_url)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT key, sum(n) FROM row_counts GROUP BY key")).all())
        assert rows == {"payments:pending": 6, "payments:failed": 3, "payments:cancelled": 3}
    finally:
        engine.dispose()

