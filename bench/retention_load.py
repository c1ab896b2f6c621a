"""Loads the retention bench's data the fast way (generate_series in SQL, no API): closed payments and their audit
rows, used by bench/retention.py. Foreign keys are not checked during the load (the rows are consistent by
construction: each log's payment is one of the payments loaded) and the audit table's secondary indexes are built
after it, as a restore would."""
from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.engine import Engine

WALLETS = 1000


def load_payments(engine: Engine, count: int, pending_every: int = 100, days_old: int = 400) -> float:
    """`count` payments, md5('p' || i) as ids, spread over the last `days_old` days; one in `pending_every` still
    pending, the rest completed. Returns seconds."""
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("""
            INSERT INTO payments (id, order_id, wallet_address, expected_amount_usdt, requested_amount_usdt,
                received_amount_usdt, underpayment_tolerance_usdt, status, callback_url, callback_attempts,
                callback_success, paid_late, metadata, request_fingerprint, created_at, expires_at, completed_at,
                updated_at)
            SELECT md5('p' || i)::uuid, 'bench-' || i, 'T' || lpad(to_hex(i % :wallets), 33, 'x'),
                   10 + (i % 100000) / 1000000.0, 10 + (i % 100000) / 1000000.0,
                   CASE WHEN i % :pending_every = 0 THEN 0 ELSE 10 + (i % 100000) / 1000000.0 END, 0,
                   CASE WHEN i % :pending_every = 0 THEN 'pending' ELSE 'completed' END::payment_status,
                   'http://127.0.0.1:9/hook', 1, true, false, '{}', md5('f' || i),
                   t, t + interval '1 hour',
                   CASE WHEN i % :pending_every = 0 THEN NULL ELSE t + interval '5 minutes' END,
                   t + interval '5 minutes'
            FROM generate_series(1, :count) i,
                 LATERAL (SELECT now() - make_interval(secs => :span * (1 - i::float8 / :count))) AS at(t)
        """), {"count": count, "wallets": WALLETS, "pending_every": pending_every, "span": days_old * 86400})
    with engine.begin() as conn:
        conn.execute(text("ANALYZE payments"))
    return time.monotonic() - started


def log_indexes(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(  # type: ignore[misc]
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'payment_logs' "
            "AND indexname <> 'payment_logs_pkey'"))]


def load_logs(engine: Engine, count: int, payments: int, days_old: int = 400) -> dict[str, float]:
    """`count` audit rows, oldest first (ids follow time), spread over the last `days_old` days, each of payment
    `(i % payments) + 1`. Secondary indexes dropped for the load and rebuilt after. Returns seconds per step."""
    timings: dict[str, float] = {}
    indexes = log_indexes(engine)
    started = time.monotonic()
    with engine.begin() as conn:
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("""
            INSERT INTO payment_logs (payment_id, event_type, message, event_metadata, created_at)
            SELECT md5('p' || ((i % :payments) + 1))::uuid,
                   (ARRAY['created', 'transfer_seen', 'completed', 'webhook_delivered'])[1 + i % 4],
                   'bench audit row ' || i, jsonb_build_object('n', i),
                   now() - make_interval(secs => :span * (1 - i::float8 / :count))
            FROM generate_series(1, :count) i
        """), {"count": count, "payments": payments, "span": days_old * 86400})
    timings["insert_s"] = time.monotonic() - started
    started = time.monotonic()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SET maintenance_work_mem = '512MB'"))
        for _, definition in indexes:
            conn.execute(text(definition))
        timings["indexes_s"] = time.monotonic() - started
        started = time.monotonic()
        conn.execute(text("VACUUM (ANALYZE) payment_logs"))
        timings["vacuum_s"] = time.monotonic() - started
    return timings
