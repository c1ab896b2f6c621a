"""How long each dashboard page takes with many payments and their logs in the database.

A fresh database with N payments seeded as bench/metrics.py does (COPY; a credited transfer and a webhook event
per completed payment, unmatched transfers, pending events), two audit rows per payment, some payments failed and
expired, vacuumed as autovacuum would have; gunicorn with gunicorn.conf.py (WATCHER_ENABLED=false); an admin logged
in over HTTP; then each page GET sequentially from one client, REQUESTS times, and the time of each answer.
Writes bench/results/dashboard.json. The target (issue 28): every page within 200 ms at 1,000,000 payments.
"""
from __future__ import annotations

import argparse
import os
import re
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
from bench.metrics import seed

NAME, PASSWORD = "bench", "a bench password"
TARGET_MS = 200.0
EXTRA_SQL = """
INSERT INTO payment_logs (payment_id, event_type, message, event_metadata, created_at)
SELECT id, 'created', 'payment created', '{}'::jsonb, created_at FROM payments;
INSERT INTO payment_logs (payment_id, event_type, message, event_metadata, created_at)
SELECT payment_id, 'webhook_delivered', 'payment.completed event attempt 1: delivered (HTTP 200)',
       '{"attempt": 1, "status_code": 200}'::jsonb, now() FROM transfers WHERE payment_id IS NOT NULL;
UPDATE payments SET status = 'failed', failure_reason = 'cancelled' WHERE order_id LIKE '%37';
UPDATE payments SET status = 'expired' WHERE order_id LIKE '%47'
"""


def fill(url: str, n: int) -> dict[str, str]:
    """The database, and a payment, an address and a transaction hash to search for."""
    from console.accounts import create_admin
    from database import normalize_url
    from ledger.checkout import open_ledger

    seed(url, n)
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        for statement in EXTRA_SQL.split(";"):
            conn.execute(text(statement))
        row = conn.execute(text("SELECT p.id, p.order_id, p.wallet_address, t.transaction_hash FROM payments p "
                                "JOIN transfers t ON t.payment_id = p.id ORDER BY p.order_id LIMIT 1")).one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    db = open_ledger(url, "http://127.0.0.1")
    with db.transaction() as session:
        create_admin(session, NAME, PASSWORD)
    db.dispose()
    return {"id": str(row.id), "order_id": row.order_id, "address": row.wallet_address, "tx": row.transaction_hash}


def logged_in(base: str) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{base}/admin/login", timeout=10).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    answer = session.post(f"{base}/admin/login", data={"name": NAME, "password": PASSWORD, "csrf_token": token},
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 303, answer.text[:300]
    return session


def pages(session: requests.Session, base: str, keys: dict[str, str]) -> dict[str, str]:
    first = session.get(f"{base}/admin/payments", timeout=10).text
    cursor = re.search(r"cursor=([A-Za-z0-9_-]+)", first)
    return {
        "overview": "/admin",
        "payments": "/admin/payments",
        "payments, page 2": f"/admin/payments?cursor={cursor.group(1) if cursor else ''}",
        "payments, status failed": "/admin/payments?status=failed",
        "payments, one day": "/admin/payments?from=2020-01-01&to=2020-01-01",
        "search: order id": f"/admin/payments?q={keys['order_id']}",
        "search: address": f"/admin/payments?q={keys['address']}",
        "search: tx hash": f"/admin/payments?q={keys['tx']}",
        "one payment": f"/admin/payments/{keys['id']}",
        "unmatched transfers": "/admin/transfers",
        "set-aside transfers": "/admin/transfers?status=set_aside",
        "events": "/admin/events",
        "events, failed": "/admin/events?state=failed",
        "rates": "/admin/rates",
        "API keys": "/admin/keys",
    }


def measure(session: requests.Session, base: str, path: str, requests_per_page: int) -> dict[str, Any]:
    times = []
    for _ in range(requests_per_page):
        started = time.perf_counter()
        answer = session.get(base + path, timeout=10, allow_redirects=False)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return {"path": path, "p50_ms": rnd(percentile(times, 50)), "p99_ms": rnd(percentile(times, 99)),
            "max_ms": rnd(max(times))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite (a few seconds)")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a PostgreSQL server (superuser); default %(default)s")
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100, help="GETs of each page")
    parser.add_argument("--out", type=Path, default=RESULTS / "dashboard.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.payments, args.requests = 1000, 5
    busy = 0.0 if args.quick else wait_quiet()
    bench_db = BenchDatabase(args.pg_url, "dashboard")
    tmp = Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    proc = None
    try:
        bench_db.migrate()
        started = time.perf_counter()
        keys = fill(bench_db.url, args.payments)
        seeded_seconds = time.perf_counter() - started
        port = free_port()
        proc, _ = start_gunicorn(bench_db.url, port, None, tmp / "gunicorn.log")
        base = f"http://127.0.0.1:{port}"
        session = logged_in(base)
        routes = pages(session, base, keys)
        for path in routes.values():  # warm: each worker's first answer imports and connects
            measure(session, base, path, 2)
        results = {name: measure(session, base, path, args.requests) for name, path in routes.items()}
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        bench_db.close()
    print_table(["page", "p50 ms", "p99 ms", "max ms"],
                [[name, r["p50_ms"], r["p99_ms"], r["max_ms"]] for name, r in results.items()])
    worst = max(r["p99_ms"] for r in results.values())
    print(f"{args.payments} payments (seeded in {seeded_seconds:.0f} s); worst p99 {worst} ms, target {TARGET_MS} ms")
    write_json(args.out, {"machine": machine(), "busy_before_percent": busy, "payments": args.payments,
                          "requests_per_page": args.requests, "target_ms": TARGET_MS, "pages": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
