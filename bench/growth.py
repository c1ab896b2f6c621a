"""Growth benchmark: the operator routes, the list and the hot paths with 100,000 and 10,000,000 payments.

    .venv/bin/python -m bench.growth                       # both sizes -> bench/results/growth.json
    .venv/bin/python -m bench.growth --sizes 100000        # one size
    .venv/bin/python -m bench.growth --quick --out /tmp/growth.json

For each size N a database of its own (`<--db-name>_<N>`, dropped at the end unless `--keep`) at the newest schema
is filled in SQL (INSERT ... SELECT over generate_series, no API): N payments over --wallets wallets, created over
the last year (the newest 0.1 % pending, then 75 % completed, 20 % expired, 5 % cancelled), 3 audit rows per
payment, a transfer per 10 payments (0.1 % of them unmatched, 2 % found by the reconciliation), a webhook event per
payment (the newest 100 pending, 0.1 % failed). The load runs with triggers off (`session_replication_role =
replica`) and its plain indexes dropped, which are then built again; the counts are then made by
`row_counts_recount()`, and the database vacuumed and analysed.

Then gunicorn (`gunicorn.conf.py`, the watcher off) serves it, and:
  * each operator route and each GET /payments filter (first page, and a deep page: the cursor of a payment
    created half a year ago) is asked --requests times, one after the other: p50 / p99 from the client;
  * GET /payments/<id> and POST /payments at 200/s (bench/loadgen.py, open loop), and POST /payments at
    saturation (closed loop, 32 connections), on the history's wallets;
  * the database's size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bench.api import API_KEY, loadgen, saturate, start_gunicorn
from bench.common import (
    DEFAULT_PG,
    RESULTS,
    amounts_of_this_minute,
    free_port,
    machine,
    percentile,
    print_table,
    rnd,
    wait_quiet,
    with_database,
    write_json,
)
from web.schemas import PAYMENTS

TABLES = ("payments", "payment_logs", "transfers", "webhook_events")
EVENT_BODY = '{"type": "payment.completed", "data": {' + '"x": "' + "0" * 240 + '"}}'

PAYMENTS_SQL = """
INSERT INTO payments (id, order_id, wallet_address, expected_amount_usdt, requested_amount_usdt,
    received_amount_usdt, underpayment_tolerance_usdt, status, failure_reason, transaction_hash, callback_url,
    callback_attempts, callback_success, paid_late, metadata, request_fingerprint, created_at, expires_at,
    completed_at, cancelled_at, updated_at)
SELECT md5('p' || i)::uuid, 'growth-' || i, w.wallet, a.amount, a.amount,
    CASE s.status WHEN 'completed' THEN a.amount ELSE 0 END, 0, s.status::payment_status,
    CASE s.status WHEN 'failed' THEN 'cancelled' END,
    CASE s.status WHEN 'completed' THEN md5('t' || i) || md5('u' || i) END,
    'https://merchant.example/hook', 1, s.status <> 'pending', false, '{}', md5('f' || i), t.created,
    t.created + interval '1 hour', CASE s.status WHEN 'completed' THEN t.created + interval '5 minutes' END,
    CASE s.status WHEN 'failed' THEN t.created + interval '1 minute' END, t.created
FROM generate_series(1, :n) i
CROSS JOIN LATERAL (SELECT now() - (i::float8 / :n) * interval '365 days' AS created) t
CROSS JOIN LATERAL (SELECT (:wallets)[1 + (hashint4(i) & 2147483647) % cardinality(:wallets)] AS wallet) w
CROSS JOIN LATERAL (SELECT (1 + (i::bigint * 7919) % 100000)::numeric / 100 AS amount) a
CROSS JOIN LATERAL (SELECT CASE WHEN i <= :pending THEN 'pending' WHEN i % 20 < 15 THEN 'completed'
                               WHEN i % 20 < 19 THEN 'expired' ELSE 'failed' END AS status) s
"""
LOGS_SQL = """
INSERT INTO payment_logs (payment_id, event_type, message, event_metadata, created_at)
SELECT md5('p' || i)::uuid, (ARRAY['created', 'webhook_sent', 'completed'])[k], 'growth', '{}',
    now() - (i::float8 / :n) * interval '365 days' + k * interval '1 minute'
FROM generate_series(1, :n) i CROSS JOIN generate_series(1, 3) k
"""
TRANSFERS_SQL = """
INSERT INTO transfers (transaction_hash, log_index, from_address, to_address, amount_usdt, block_number,
    block_timestamp, status, payment_id, found_by, reason, created_at)
SELECT md5('x' || i) || md5('y' || i), 0, 'TVKG4gUar24bpAVrDv4GSzyDRtPkjPkogL',
    (:wallets)[1 + (hashint4(i) & 2147483647) % cardinality(:wallets)],
    (1 + (i::bigint * 7919) % 100000)::numeric / 100, 60000000 + i, 1700000000000 + i::bigint * 3000,
    CASE WHEN i % 10000 = 1 THEN 'unmatched' ELSE 'credited' END::transfer_status,
    CASE WHEN i % 10000 = 1 THEN NULL ELSE md5('p' || i)::uuid END,
    CASE WHEN i % 500 = 1 THEN 'reconciliation' ELSE 'scan' END,
    CASE WHEN i % 10000 = 1 THEN 'no_candidate' END, now() - (i::float8 / :n) * interval '365 days'
FROM generate_series(1, :n, 10) i
"""
EVENTS_SQL = """
INSERT INTO webhook_events (id, payment_id, type, body, callback_url, state, attempts, next_attempt_at,
    created_at, delivered_at)
SELECT 'evt_growth_' || i, md5('p' || i)::uuid, 'payment.completed', :body, 'https://merchant.example/hook',
    CASE WHEN i <= 100 THEN 'pending' WHEN i % 1000 = 0 THEN 'failed' ELSE 'delivered' END::event_state, 1,
    now() - (i::float8 / :n) * interval '365 days', now() - (i::float8 / :n) * interval '365 days',
    CASE WHEN i > 100 AND i % 1000 <> 0 THEN now() - (i::float8 / :n) * interval '365 days' END
FROM generate_series(1, :n) i
"""


def plain_indexes(conn: Any, table: str) -> list[tuple[str, str]]:
    """(name, definition) of the table's indexes that back no constraint: dropped for the load, built after."""
    return [tuple(row) for row in conn.execute(text(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = :t AND i.schemaname = current_schema() "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"), {"t": table})]


def load_history(engine: Engine, n: int, wallets: list[str], pending: int | None = None) -> dict[str, float]:
    """Fill the tables with n payments and what goes with them (see the module's doc); seconds per step."""
    pending = max(1, n // 1000) if pending is None else pending
    steps: dict[str, float] = {}
    params = {"n": n, "wallets": wallets, "pending": pending, "body": EVENT_BODY}
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))  # no triggers, no foreign key checks
        conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        dropped = {table: plain_indexes(conn, table) for table in TABLES}
        for indexes in dropped.values():
            for name, _ in indexes:
                conn.execute(text(f'DROP INDEX "{name}"'))
        for name, sql in (("payments", PAYMENTS_SQL), ("payment_logs", LOGS_SQL), ("transfers", TRANSFERS_SQL),
                          ("webhook_events", EVENTS_SQL)):
            started = time.monotonic()
            conn.execute(text(sql), params)
            steps[f"insert {name}"] = round(time.monotonic() - started, 1)
            print(f"  {name}: inserted in {steps[f'insert {name}']} s", flush=True)
        started = time.monotonic()
        for indexes in dropped.values():
            for _, definition in indexes:
                conn.execute(text(definition))
        steps["build indexes"] = round(time.monotonic() - started, 1)
        print(f"  indexes built in {steps['build indexes']} s", flush=True)
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text("SELECT row_counts_recount()"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    steps["recount, vacuum, analyze"] = round(time.monotonic() - started, 1)
    return steps


def timed(session: requests.Session, url: str, count: int, headers: dict[str, str]) -> dict[str, Any]:
    """`count` sequential GETs of `url` after 5 unmeasured ones: p50 / p99 / max in ms."""
    for _ in range(5):
        session.get(url, headers=headers, timeout=30).raise_for_status()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = session.get(url, headers=headers, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return {"p50_ms": rnd(statistics.median(times)), "p99_ms": rnd(percentile(times, 99)), "max_ms": rnd(max(times)),
            "requests": count}


def routes(engine: Engine, wallets: list[str]) -> list[tuple[str, str]]:
    """(label, path) of each route measured; deep pages start after a payment created half a year ago."""
    with engine.connect() as conn:
        def deep(where: str, **params: Any) -> str:
            row = conn.execute(text(f"SELECT created_at, id FROM payments WHERE created_at < now() - interval "
                                    f"'182 days' {where} ORDER BY created_at DESC, id DESC LIMIT 1"), params).one()
            return PAYMENTS.encode(tuple(row))
        wallet = wallets[0]
        order = conn.execute(text("SELECT order_id FROM payments ORDER BY created_at LIMIT 1")).scalar_one()
        cursors = {"all": deep(""), "completed": deep("AND status = 'completed'"),
                   "wallet": deep("AND wallet_address = :w", w=wallet),
                   "wallet_expired": deep("AND wallet_address = :w AND status = 'expired'", w=wallet)}
    return [
        ("GET /health", "/health"), ("GET /stats", "/stats"), ("GET /metrics", "/metrics"),
        ("GET /payments", "/payments"), ("GET /payments, deep page", f"/payments?cursor={cursors['all']}"),
        ("GET /payments?status=pending", "/payments?status=pending"),
        ("GET /payments?status=completed", "/payments?status=completed"),
        ("GET /payments?status=completed, deep page", f"/payments?status=completed&cursor={cursors['completed']}"),
        ("GET /payments?wallet_address=", f"/payments?wallet_address={wallet}"),
        ("GET /payments?wallet_address=, deep page", f"/payments?wallet_address={wallet}&cursor={cursors['wallet']}"),
        ("GET /payments?wallet_address=&status=expired, deep page",
         f"/payments?wallet_address={wallet}&status=expired&cursor={cursors['wallet_expired']}"),
        ("GET /payments?order_id=", f"/payments?order_id={order}"),
        ("GET /payments?limit=200", "/payments?limit=200"),
    ]


def prepare(args: argparse.Namespace, admin: Engine, name: str, n: int, wallets: list[str]) -> dict[str, Any]:
    """The database of size n: made and loaded, or (--reuse) the one a previous --keep run left."""
    url = with_database(args.pg_url, name)
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": name}).scalar()
    if args.reuse and exists:
        print(f"--- {n:,} payments: reusing {name}", flush=True)
        return {"url": url, "load_seconds": None, "load_steps": None}
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    import migrate

    migrate.upgrade_to_head(url)
    print(f"--- {n:,} payments: loading into {name}", flush=True)
    engine = create_engine(url)
    try:
        started = time.monotonic()
        steps = load_history(engine, n, wallets)
    finally:
        engine.dispose()
    return {"url": url, "load_seconds": round(time.monotonic() - started, 1), "load_steps": steps}


def measure_size(args: argparse.Namespace, n: int, wallets: list[str], tmp: Path) -> dict[str, Any]:
    admin = create_engine(with_database(args.pg_url, "postgres"), isolation_level="AUTOCOMMIT")
    name = f"{args.db_name}_{n}"
    proc = None
    engine = None
    try:
        loaded = prepare(args, admin, name, n, wallets)
        engine = create_engine(loaded["url"])
        with engine.connect() as conn:
            counts = dict(conn.execute(text(
                "SELECT 'payments', count(*) FROM payments UNION ALL SELECT 'payment_logs', count(*) FROM payment_logs "
                "UNION ALL SELECT 'transfers', count(*) FROM transfers "
                "UNION ALL SELECT 'webhook_events', count(*) FROM webhook_events")).all())
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
            wallets = list(conn.execute(text(
                "SELECT DISTINCT to_address FROM transfers ORDER BY 1 LIMIT :w"), {"w": len(wallets)}).scalars())
        print(f"  {counts}, {size / 2**30:.2f} GiB", flush=True)
        with admin.connect() as conn:
            conn.execute(text("CHECKPOINT"))  # what the load left dirty is written now, not during the measurement
        if args.load_only:
            return {"payments": n, "rows": counts, "database_bytes": size, **loaded, "routes": {}}
        port = free_port()
        proc, _ = start_gunicorn(loaded["url"], port, None, tmp / f"gunicorn-{n}.log")
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        idle = wait_quiet(timeout=args.quiet_wait)
        measured = {}
        with requests.Session() as session:
            for label, path in routes(engine, wallets):
                measured[label] = timed(session, base + path, args.requests, headers)
                print(f"  {label}: {measured[label]}", flush=True)
        (tmp / "wallets.txt").write_text("\n".join(wallets) + "\n")
        # Each load run --repeats times: a p99 of one 10 s run is its 20th slowest request, which one stall of the
        # host (another tenant's I/O, a checkpoint) moves; the runs' median is the figure, every run is kept.
        block = amounts_of_this_minute(2 * args.repeats)  # every create run asks amounts of its own
        measured["POST /payments at 200/s"] = repeated(args.repeats, lambda i: loadgen(
            port, "post", args.rate, args.duration, tmp, save_ids=tmp / "ids.txt", prefix=f"g{n}t{block}r{i}",
            base=block + i))
        measured["GET /payments/<id> at 200/s"] = repeated(args.repeats, lambda i: loadgen(
            port, "get", args.rate, args.duration, tmp, ids=tmp / "ids.txt"))
        measured["POST /payments at saturation"] = repeated(args.repeats, lambda i: saturate(
            port, "post", args.saturation_duration, tmp, 32, prefix=f"s{n}t{block}r{i}", base=block + args.repeats + i))
        for label in list(measured)[-3:]:
            print(f"  {label}: {measured[label]}", flush=True)
        return {"payments": n, "rows": counts, "database_bytes": size, "load_seconds": loaded["load_seconds"],
                "load_steps": loaded["load_steps"], "machine_busy_before_percent": idle, "routes": measured}
    finally:
        if proc is not None:
            stop(proc)
        if engine is not None:
            engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def hot(run: dict[str, Any]) -> dict[str, Any]:
    latency = run["latency_ms"]
    figures = {"p50_ms": rnd(latency.get("p50")), "p99_ms": rnd(latency.get("p99")), "requests": run.get("requests"),
               "statuses": run.get("statuses"), "errors": run.get("errors", 0)}
    if "requests_per_second" in run:
        figures["requests_per_second"] = rnd(run["requests_per_second"], 1)
    return figures


def repeated(times: int, run: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """`run` made `times` times: the median of the runs' p50, p99 (and rate), and each run's figures. Every
    request must have succeeded (a refused create takes another path, and would be measured as if it were one)."""
    runs = [hot(run(i)) for i in range(times)]
    failed = [r for r in runs if r["errors"] or set(r["statuses"] or {}) - {"200", "201"}]
    if failed:
        raise RuntimeError(f"requests failed in a load run: {failed}")
    summary = {name: rnd(statistics.median(r[name] for r in runs))
               for name in ("p50_ms", "p99_ms", "requests_per_second") if name in runs[0]}
    return {**summary, "runs": runs}


def stop(proc: subprocess.Popen) -> None:
    """gunicorn started by start_gunicorn (its own session): SIGTERM to its group."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,10000000", help="payments per run, comma-separated")
    parser.add_argument("--wallets", type=int, default=1000, help="wallets the history is spread over")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per route")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each fixed-rate run")
    parser.add_argument("--saturation-duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each fixed-rate and saturation load")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a PostgreSQL server (superuser); default %(default)s")
    parser.add_argument("--db-name", default="tron_growth_bench",
                        help="prefix of the database made (and dropped) per size: <prefix>_<size>")
    parser.add_argument("--keep", action="store_true", help="keep each size's database (for --reuse, bench.watcher)")
    parser.add_argument("--reuse", action="store_true", help="measure in the database a --keep run left, if any")
    parser.add_argument("--load-only", action="store_true", help="load (with --keep), measure nothing")
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--out", type=Path, default=RESULTS / "growth.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.wallets, args.requests, args.duration, args.saturation_duration = "2000", 20, 20, 1.0, 1.0
        args.rate, args.quiet_wait, args.repeats = 50.0, 1.0, 1
        if args.db_name == parser.get_default("db_name"):
            args.db_name = f"bench_growth_{uuid.uuid4().hex[:8]}"  # test runs side by side never share one
    from tron_sim import random_address

    wallets = [random_address() for _ in range(args.wallets)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_growth_"))
    try:
        results = [measure_size(args, int(n), wallets, tmp) for n in args.sizes.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.load_only:
        return 0
    labels = list(results[0]["routes"])
    headers = ["route"] + [f"{r['payments']:,}: p50 / p99 ms" for r in results]
    rows = [[label] + [f"{r['routes'][label]['p50_ms']} / {r['routes'][label]['p99_ms']}" for r in results]
            for label in labels]
    rows.append(["creates/s at saturation"] + [r["routes"]["POST /payments at saturation"]["requests_per_second"]
                                               for r in results])
    rows.append(["database size"] + [f"{r['database_bytes'] / 2**30:.2f} GiB" for r in results])
    table = print_table(headers, rows)
    write_json(args.out, {"benchmark": "growth", "quick": args.quick, "machine": machine(),
                          "settings": {k: str(v) for k, v in vars(args).items()}, "results": results,
                          "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
