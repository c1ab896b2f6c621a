"""Retention benchmark: `cleanup-logs` on 30,000,000 audit rows while the API serves, and the export's memory.

    .venv/bin/python -m bench.retention                    # full run, writes bench/results/retention.json
    .venv/bin/python -m bench.retention --logs 3000000     # smaller
    .venv/bin/python -m bench.retention --quick --out /tmp/retention.json

1. Cleanup under load. A database of its own (tron_retention_bench, dropped at the end unless --keep) gets
   1,000,000 closed payments (one in a hundred pending) and `--logs` audit rows spread evenly over 400 days, loaded
   the fast way (generate_series in SQL, bench/retention_load.py). gunicorn (production gunicorn.conf.py) serves it.
   bench/loadgen.py offers 200 req/s of POST /payments, then of GET /payments/<id> (ids of the loaded payments), 20 s
   each: first without the cleanup (the baseline), then while `db_manager.py cleanup-logs --days N` runs, again and
   again until it ends. Every 0.2 s the age of the cleanup's open transaction and the number of sessions waiting for
   a lock are sampled: the longest transaction it held and the most lock waits seen are reported.
2. Export memory. Another database gets 100,000 payments with an audit row each, then 1,000,000; at each size
   `db_manager.py export --file F` runs and its resident memory is sampled every 0.05 s (maximum kept).
3. Archive and restore of 100,000 of those payments: time, file size, rows.

The targets are bench/api.py's (p99 at 200 req/s: create 10 ms, status 4 ms).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bench.api import TARGETS, loadgen, start_gunicorn
from bench.common import (
    DEFAULT_PG,
    RESULTS,
    ROOT,
    amounts_of_this_minute,
    machine,
    print_table,
    rnd,
    wait_quiet,
    with_database,
    write_json,
)
from bench.retention_load import load_logs, load_payments
from ops.records import CLEANUP_BATCH, CLEANUP_DUTY, CLEANUP_PAUSE

PYTHON = sys.executable
CLEANUP_APP = "tron-usdt-monitor db_manager"  # db_manager.py's application_name
RATE = 200.0


def recreate(server: str, name: str) -> str:
    admin = create_engine(with_database(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    import migrate

    url = with_database(server, name)
    migrate.upgrade_to_head(url)
    return url


def drop(server: str, name: str) -> None:
    admin = create_engine(with_database(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def database_size(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT pg_database_size(current_database()), pg_total_relation_size('payment_logs'),"
                                " (SELECT count(*) FROM payment_logs), (SELECT count(*) FROM payments)")).one()
    return {"database_mb": round(row[0] / 2**20), "payment_logs_mb": round(row[1] / 2**20),
            "payment_logs_rows": row[2], "payments_rows": row[3]}


class LockWatch:
    """Samples, every 0.2 s, the age of the cleanup's open transaction and how many sessions wait for a lock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.longest_transaction_s = 0.0
        self.most_lock_waits = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self._stop.wait(0.2):
                age, waits = conn.execute(text(
                    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)) FILTER (WHERE "
                    "application_name LIKE :app), 0), count(*) FILTER (WHERE wait_event_type = 'Lock') "
                    "FROM pg_stat_activity WHERE datname = current_database()"), {"app": f"{CLEANUP_APP}%"}).one()
                self.longest_transaction_s = max(self.longest_transaction_s, float(age))
                self.most_lock_waits = max(self.most_lock_waits, int(waits))
                self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def latency(run: dict[str, Any]) -> dict[str, Any]:
    return {"p50_ms": run["latency_ms"].get("p50"), "p99_ms": run["latency_ms"].get("p99"),
            "max_ms": run["latency_ms"].get("max"), "achieved_rps": run.get("achieved_rate"),
            "requests": run.get("requests"),
            "non_2xx": sum(v for k, v in run.get("statuses", {}).items() if not k.startswith("2")),
            "errors": run.get("errors", 0)}


RUN_BLOCK = amounts_of_this_minute(256)  # every create run asks amounts and order ids of its own


def api_runs(port: int, tmp: Path, duration: float, tag: str, k: int) -> dict[str, dict[str, Any]]:
    """A create run, then a status run; each create run's amounts are its own (`base`): never amount_in_use."""
    base = RUN_BLOCK + (0 if tag == "base" else 128) + k
    create = loadgen(port, "post", RATE, duration, tmp, prefix=f"{tag}{RUN_BLOCK}r{k}", base=base)
    status = loadgen(port, "get", RATE, duration, tmp, ids=tmp / "ids.txt")
    runs = {"create": latency(create), "status": latency(status)}
    failed = {name: run for name, run in runs.items() if run["non_2xx"] or run["errors"]}
    if failed:  # a refused request takes a shorter path: the figures would not be the API's
        raise RuntimeError(f"requests failed in a load run: {failed}")
    return runs


def cleanup_under_load(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    name = args.database
    url = with_database(args.pg_url, name)
    engine = create_engine(url)
    loaded: dict[str, Any] = {}
    if args.reuse and database_size(engine)["payment_logs_rows"] >= args.logs:
        import migrate

        migrate.upgrade_to_head(url)
        loaded["reused"] = True
    else:
        engine.dispose()
        url = recreate(args.pg_url, name)
        engine = create_engine(url)
        loaded["payments_s"] = rnd(load_payments(engine, args.payments))
        loaded.update({k: rnd(v) for k, v in load_logs(engine, args.logs, args.payments).items()})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))  # what the load left dirty is written now, not during the baseline
    size_before = database_size(engine)
    print(f"loaded: {json.dumps(loaded)} {json.dumps(size_before)}", flush=True)
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT md5('p' || i)::uuid FROM generate_series(1, :n, :step) i"),
                           {"n": args.payments, "step": max(1, args.payments // 10000)}).scalars().all()
    (tmp / "ids.txt").write_text("\n".join(str(i) for i in ids) + "\n")
    from tron_sim import random_address

    (tmp / "wallets.txt").write_text("\n".join(random_address() for _ in range(1000)) + "\n")
    port = 18000 + os.getpid() % 1000
    proc, _ = start_gunicorn(url, port, None, tmp / "gunicorn.log")
    try:
        loadgen(port, "post", 50, 3.0, tmp, prefix=f"warm{RUN_BLOCK}", base=RUN_BLOCK + 127)
        loadgen(port, "get", 50, 3.0, tmp, ids=tmp / "ids.txt")
        wait_quiet(timeout=args.quiet_wait)
        baseline = [api_runs(port, tmp, args.duration, "base", k) for k in range(args.baseline_runs)]
        for run in baseline:
            print(f"baseline: {json.dumps(run)}", flush=True)
        watch = LockWatch(engine)
        started = time.monotonic()
        cleanup = subprocess.Popen(
            [PYTHON, "db_manager.py", "--database-url", url, "cleanup-logs", "--days", str(args.days),
             "--batch-size", str(args.batch_size), "--pause", str(args.pause), "--duty", str(args.duty)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        during: list[dict[str, Any]] = []
        k = 0
        while cleanup.poll() is None and k < args.max_runs:
            run = api_runs(port, tmp, args.duration, "during", k)
            run["cleanup_running_at_end"] = cleanup.poll() is None
            during.append(run)
            print(f"during cleanup: {json.dumps(run)}", flush=True)
            k += 1
        out, err = cleanup.communicate()
        cleanup_s = time.monotonic() - started
        watch.stop()
        if cleanup.returncode != 0:
            raise RuntimeError(f"cleanup-logs failed: {err.strip()}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    deleted = int(out.split()[1])
    size_after = database_size(engine)
    engine.dispose()
    if not args.keep:
        drop(args.pg_url, name)
    return {
        "load": loaded, "before": size_before, "after": size_after,
        "cleanup": {"days": args.days, "batch_size": args.batch_size, "pause_s": args.pause, "duty": args.duty,
                    "deleted_rows": deleted,
                    "seconds": rnd(cleanup_s, 1), "rows_per_second": round(deleted / cleanup_s),
                    "longest_cleanup_transaction_s": rnd(watch.longest_transaction_s, 3),
                    "most_sessions_waiting_for_a_lock": watch.most_lock_waits, "samples": watch.samples,
                    "output": out.strip()},
        "baseline": baseline, "during": during,
    }


def peak_rss(command: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB sampled every 0.05 s, seconds, stdout) of `command`."""
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss / 2**20)
        except psutil.Error:
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[3:5]} failed: {err.strip()}")
    return peak, time.monotonic() - started, out.strip()


def export_and_archive(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    name = f"{args.database}_export"
    url = recreate(args.pg_url, name)
    engine = create_engine(url)
    results: dict[str, Any] = {"export": [], "archive": None}
    try:
        for size in args.export_sizes:
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE payments, payment_logs CASCADE"))
            load_payments(engine, size)
            load_logs(engine, size, size)
            target = tmp / f"export-{size}.json"
            rss, seconds, out = peak_rss([PYTHON, "db_manager.py", "--database-url", url, "export", "--file",
                                          str(target)])
            entry = {"payments": size, "payment_logs": size, "peak_rss_mb": rnd(rss, 1), "seconds": rnd(seconds, 1),
                     "file_mb": round(target.stat().st_size / 2**20, 1), "output": out}
            target.unlink()
            results["export"].append(entry)
            print(f"export: {json.dumps(entry)}", flush=True)
        # archive the oldest tenth of what is loaded (spread over 400 days: created more than 360 days ago)
        with engine.connect() as conn:
            before = conn.execute(text("SELECT (now() - interval '360 days')::text")).scalar_one()
        archive_file = tmp / "archive.jsonl.gz"
        rss, seconds, out = peak_rss([PYTHON, "db_manager.py", "--database-url", url, "archive", "--before", before,
                                      "--file", str(archive_file)])
        archived = {"peak_rss_mb": rnd(rss, 1), "seconds": rnd(seconds, 1),
                    "file_mb": round(archive_file.stat().st_size / 2**20, 1), "output": out}
        rss, seconds, out = peak_rss([PYTHON, "db_manager.py", "--database-url", url, "restore", "--file",
                                      str(archive_file)])
        restored = {"peak_rss_mb": rnd(rss, 1), "seconds": rnd(seconds, 1), "output": out}
        results["archive"] = {"archive": archived, "restore": restored}
        print(f"archive: {json.dumps(results['archive'])}", flush=True)
    finally:
        engine.dispose()
        drop(args.pg_url, name)
    return results


def worst(runs: list[dict[str, Any]], route: str) -> float | None:
    values = [r[route]["p99_ms"] for r in runs if r[route]["p99_ms"] is not None]
    return max(values) if values else None


def report(args: argparse.Namespace, result: dict[str, Any]) -> None:
    cleanup = result.get("cleanup")
    if cleanup:
        rows = []
        for phase in ("baseline", "during"):
            for k, run in enumerate(cleanup[phase]):
                for route in ("create", "status"):
                    r = run[route]
                    rows.append([f"{phase} #{k + 1}", route, r["achieved_rps"], r["p50_ms"], r["p99_ms"],
                                 r["non_2xx"] + r["errors"]])
        print_table(["run", "route", "req/s", "p50 ms", "p99 ms", "non-2xx"], rows)
        c = cleanup["cleanup"]
        print(f"cleanup-logs --days {c['days']}: {c['deleted_rows']} rows deleted of "
              f"{cleanup['before']['payment_logs_rows']} in {c['seconds']} s ({c['rows_per_second']} rows/s); "
              f"longest transaction {c['longest_cleanup_transaction_s']} s; at most "
              f"{c['most_sessions_waiting_for_a_lock']} sessions waiting for a lock", flush=True)
        measured = {"create_p99_ms_during_cleanup": worst(cleanup["during"], "create"),
                    "status_p99_ms_during_cleanup": worst(cleanup["during"], "status")}
        targets = {"create_p99_ms_during_cleanup": TARGETS["create_p99_ms_at_200"][0],
                   "status_p99_ms_during_cleanup": TARGETS["status_p99_ms_at_200"][0]}
        result["targets"] = {name: {"target": targets[name], "measured": value,
                                    "met": value is not None and value <= targets[name]}
                             for name, value in measured.items()}
        result["baseline_worst"] = {"create_p99_ms": worst(cleanup["baseline"], "create"),
                                    "status_p99_ms": worst(cleanup["baseline"], "status")}
        print(json.dumps(result["targets"]), flush=True)
    exports = result.get("export", {}).get("export") or []
    if exports:
        print_table(["payments", "audit rows", "peak RSS MB", "seconds", "file MB"],
                    [[e["payments"], e["payment_logs"], e["peak_rss_mb"], e["seconds"], e["file_mb"]]
                     for e in exports])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.split("\n")[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a PostgreSQL server (superuser); default %(default)s")
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--logs", type=int, default=30_000_000)
    parser.add_argument("--days", type=int, default=300, help="cleanup-logs --days (rows span 400 days)")
    parser.add_argument("--batch-size", type=int, default=CLEANUP_BATCH, help="cleanup-logs --batch-size")
    parser.add_argument("--pause", type=float, default=CLEANUP_PAUSE, help="cleanup-logs --pause")
    parser.add_argument("--duty", type=float, default=CLEANUP_DUTY, help="cleanup-logs --duty")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per latency run")
    parser.add_argument("--baseline-runs", type=int, default=2)
    parser.add_argument("--max-runs", type=int, default=100, help="at most this many runs during the cleanup")
    parser.add_argument("--export-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--skip-cleanup", action="store_true")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--database", default="tron_retention_bench", help="its name (and <name>_export's)")
    parser.add_argument("--reuse", action="store_true", help="reuse the database if it holds --logs rows")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--quiet-wait", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS / "retention.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.payments, args.logs, args.duration, args.baseline_runs, args.duty = 2000, 60_000, 2.0, 1, 1.0
        args.export_sizes, args.quiet_wait, args.database = [1000, 3000], 1.0, "tron_retention_quick"
    tmp = Path(tempfile.mkdtemp(prefix="bench_retention_"))
    result: dict[str, Any] = {"command": "python -m bench.retention " + " ".join(argv or sys.argv[1:])}
    try:
        if not args.skip_export:
            result["export"] = export_and_archive(args, tmp)
        if not args.skip_cleanup:
            result["cleanup"] = cleanup_under_load(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, result)
    result["machine"] = machine()
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
