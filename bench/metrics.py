"""How long a Prometheus scrape of GET /metrics takes with many payments in the database.

A fresh database with N payments (COPY, as bench/watcher.py seeds them), one credited transfer and one delivered
webhook event per payment, a few pending events and unmatched transfers, vacuumed as autovacuum would have;
gunicorn with gunicorn.conf.py
(WATCHER_ENABLED=false); then GET /metrics sequentially from one client, as Prometheus does, and the time of each
answer. Writes bench/results/metrics.json.
"""
from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

from bench.api import start_gunicorn
from bench.common import (
    DEFAULT_PG,
    RESULTS,
    BenchDatabase,
    free_port,
    machine,
    percentile,
    print_table,
    rnd,
    wait_quiet,
    write_json,
)
from bench.watcher import seed_payments

# Per payment: a credited transfer and a delivered event; besides, some unmatched transfers and pending events.
SEED_SQL = """
UPDATE payments SET status = 'completed', received_amount_usdt = expected_amount_usdt, completed_at = now()
 WHERE order_id NOT LIKE '%7';
INSERT INTO transfers (transaction_hash, log_index, from_address, to_address, amount_usdt, block_number,
                       block_timestamp, status, payment_id, found_by)
SELECT md5(id::text) || md5(order_id), 0, 'TVKG4gUar24bpAVrDv4GSzyDRtPkjPkogL', wallet_address, expected_amount_usdt,
       row_number() OVER (), 1700000000000, 'credited', id, 'scan'
  FROM payments WHERE status = 'completed';
INSERT INTO transfers (transaction_hash, log_index, from_address, to_address, amount_usdt, block_number,
                       block_timestamp, status, found_by)
SELECT md5(i::text) || md5('unmatched'), 0, 'TVKG4gUar24bpAVrDv4GSzyDRtPkjPkogL', 'TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre',
       1, i, 1700000000000, 'unmatched', 'reconciliation'
  FROM generate_series(1, 100) AS i;
INSERT INTO webhook_events (id, payment_id, type, body, callback_url, state, attempts, created_at, delivered_at)
SELECT 'evt_' || md5(id::text), id, 'payment.completed', '{}', callback_url,
       CASE WHEN order_id LIKE '%99' THEN 'pending'::event_state ELSE 'delivered'::event_state END, 1, now(), now()
  FROM payments WHERE status = 'completed';
"""


def seed(url: str, n: int) -> None:
    from database import normalize_url
    from tron_sim import random_address

    wallets = [random_address() for _ in range(max(1, n // 10))]
    seed_payments(url, n, wallets, "http://127.0.0.1:9/hook")
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        for statement in SEED_SQL.split(";"):
            if statement.strip():
                conn.execute(text(statement))
    # Steady state: autovacuum keeps the visibility map current, so counts by status are index-only scans.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def scrape(port: int, scrapes: int) -> dict[str, Any]:
    session = requests.Session()
    times: list[float] = []
    size = 0
    for _ in range(scrapes):
        started = time.perf_counter()
        answer = session.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text[:300]
        size = len(answer.content)
    return {"scrapes": scrapes, "p50_ms": rnd(percentile(times, 50)), "p95_ms": rnd(percentile(times, 95)),
            "max_ms": rnd(max(times)), "bytes": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite (a few seconds)")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a PostgreSQL server (superuser); default %(default)s")
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "metrics.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.payments, args.scrapes = 1000, 10
    busy = 0.0 if args.quick else wait_quiet()
    bench_db = BenchDatabase(args.pg_url, "metrics")
    tmp = Path(tempfile.mkdtemp(prefix="bench_metrics_"))
    proc = None
    try:
        bench_db.migrate()
        seed(bench_db.url, args.payments)
        port = free_port()
        proc, _ = start_gunicorn(bench_db.url, port, None, tmp / "gunicorn.log")
        scrape(port, 3)  # warm: each worker's first answer imports and connects
        result = {"payments": args.payments, **scrape(port, args.scrapes)}
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        bench_db.close()
    print_table(["payments", "scrapes", "p50 ms", "p95 ms", "max ms", "answer bytes"],
                [[result["payments"], result["scrapes"], result["p50_ms"], result["p95_ms"], result["max_ms"],
                  result["bytes"]]])
    write_json(args.out, {"machine": machine(), "busy_before_percent": busy, "result": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
