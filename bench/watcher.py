"""Watcher benchmark: N pending payments over W wallets, a busy simulated chain, the real watcher loop.

    .venv/bin/python -m bench.watcher               # full run, writes bench/results/watcher.json + watcher.svg
    .venv/bin/python -m bench.watcher --quick --out /tmp/watcher.json

For each strategy and size (N, W):
  * a fresh database on a real PostgreSQL, the N payments bulk-inserted with COPY (distinct (wallet, amount)
    pairs, created 10 minutes ago, expiring in 30 days), the watcher's cursors set to the solid head
    (steady state: the watcher has been running; no catch-up is measured);
  * the simulator (tron_sim) mining a block every --block-interval s with --solidify-depth, each block
    carrying --noise USDT transfers to random addresses, --matching transfers that pay a pending payment
    exactly, and --stray transfers of a wrong amount to a watched wallet (unmatched, or partial when the
    wallet has one payment);
  * the real watcher loop in its own process (bench/watcher_proc.py = `python watcher.py` + counters),
    with the production TronClient and TRONGRID_MAX_RPS;
  * a real WebhookDispatcher (production settings, in the watcher's process, woken after each cycle
    that wrote events) delivering to an HTTP receiver on
    127.0.0.1.
Detection latency = when the receiver got the payment.completed webhook - when the transfer's block became
solidified in the simulator (the wall time at which block b + depth was mined). With --detect (DETECT_UNCONFIRMED)
also the seen latency = when the receiver got payment.detected - the transfer's block time.

    .venv/bin/python -m bench.watcher --strategies blocks --sizes 1000x100 --history 10000000
                                                     # the same watched set on 10,000,000 closed payments
    .venv/bin/python -m bench.watcher --real-pace    # TRON's pace: 3 s blocks mined at their slots, solidified
                                                     # 19 deep, a cycle per block, detection on, blocks strategy
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    DEFAULT_PG,
    RESULTS,
    ROOT,
    BenchDatabase,
    machine,
    percentile,
    print_table,
    rnd,
    svg_plot,
    wait_quiet,
    with_database,
    write_json,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """Records (arrival time, type, payment id) of every webhook POSTed to it; answers 204."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []
        lock = threading.Lock()
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                try:
                    data = json.loads(body)
                    with lock:
                        events.append((at, data["type"], data["data"]["id"]))
                except (ValueError, KeyError):
                    pass
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def seed_payments(url: str, n: int, wallets: list[str], callback: str) -> list[tuple[str, str, int]]:
    """COPY n pending payments; returns (id, wallet, amount in micro-USDT) for each."""
    from sqlalchemy import create_engine

    from database import normalize_url

    now = datetime.now(UTC)
    created = (now - timedelta(minutes=10)).isoformat()
    expires = (now + timedelta(days=30)).isoformat()
    rows = []
    buf = io.StringIO()
    writer = csv.writer(buf)
    w = len(wallets)
    for j in range(n):
        pid = str(uuid.uuid4())
        wallet = wallets[j % w]
        micro = 5_000_000 + (j // w) * 10_000 + random.randrange(1, 10_000)  # distinct per wallet
        amount = f"{micro // 1_000_000}.{micro % 1_000_000:06d}"
        rows.append((pid, wallet, micro))
        writer.writerow([pid, f"bench-{j}", wallet, amount, amount, "0", "pending", callback, "bench", created,
                         expires, created])
    buf.seek(0)
    engine = create_engine(normalize_url(url))
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            cur.copy_expert(
                "COPY payments (id, order_id, wallet_address, expected_amount_usdt, requested_amount_usdt, "
                "received_amount_usdt, status, callback_url, request_fingerprint, created_at, expires_at, updated_at) "
                "FROM STDIN WITH (FORMAT csv)", buf)
            cur.execute("ANALYZE payments")
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return rows


def seed_cursors(url: str, strategy: str, wallets: list[str], solid: dict[str, int]) -> None:
    """Steady state: the watcher has read everything up to the current solid head."""
    from sqlalchemy import create_engine, text

    from database import normalize_url
    from infra.config import Config

    chain = Config().chain_key  # the benchmark's watcher reads "mainnet" USDT, served by the simulator
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        head = {"number": solid["solid_head"], "timestamp": solid["solid_timestamp"]}
        conn.execute(text("INSERT INTO service_state (key, value) VALUES (:k, CAST(:v AS jsonb))"),
                     [{"k": f"watcher_strategy:{chain}", "v": json.dumps({"strategy": strategy, "since": time.time()})},
                      {"k": f"block_cursor:{chain}", "v": json.dumps(head)},
                      {"k": f"solid_head:{chain}", "v": json.dumps({**head, "accepted_at": time.time()})}])
        if strategy != "blocks":  # the blocks strategy keeps no cursor per wallet: its block cursor is their floor
            conn.execute(text("INSERT INTO wallet_cursors (chain, wallet_address, last_checked_timestamp) "
                              "VALUES (:c, :w, :t)"),
                         [{"c": chain, "w": wallet, "t": solid["solid_timestamp"]} for wallet in wallets])
    engine.dispose()


class ExistingDatabase:
    """A database left by another bench (`bench.growth --keep`), used in place of a fresh one; left in place at the
    end (its owner drops it), with what the run wrote."""

    def __init__(self, server_url: str, name: str) -> None:
        self.name = name
        self.url = with_database(server_url, name)

    def migrate(self) -> None:
        import migrate

        migrate.upgrade_to_head(self.url)

    def close(self) -> None:
        pass


def bench_database(args: argparse.Namespace) -> BenchDatabase | ExistingDatabase:
    from sqlalchemy import create_engine, text

    if args.history_db:
        admin = create_engine(with_database(args.pg_url, "postgres"))
        with admin.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": args.history_db}).scalar()
        admin.dispose()
        if found:
            return ExistingDatabase(args.pg_url, args.history_db)
    return BenchDatabase(args.pg_url, "watch")


def prepare_history(url: str, n: int, reused: bool, late_window_seconds: int) -> tuple[list[str], dict[str, Any]]:
    """n closed payments (bench.growth's history; already there when `reused`), none within the late window: the
    watched set is then only what the run seeds. Returns the history's wallets and what is there."""
    from sqlalchemy import create_engine, text

    from bench.growth import load_history
    from tron_sim import random_address

    engine = create_engine(url)
    try:
        if not reused:
            load_history(engine, n, [random_address() for _ in range(1000)], pending=0)
        with engine.begin() as conn:
            if reused:  # what an earlier run seeded there
                conn.execute(text("DELETE FROM payments WHERE order_id LIKE 'bench-%'"))
                conn.execute(text("DELETE FROM service_state"))
                conn.execute(text("DELETE FROM wallet_cursors"))
            conn.execute(text("UPDATE payments SET status = 'expired' WHERE status = 'pending'"))
            conn.execute(text("DELETE FROM payments WHERE created_at > now() - make_interval(secs => :s)"),
                         {"s": late_window_seconds + 86400})
        with engine.connect() as conn:
            wallets = list(conn.execute(text("SELECT DISTINCT to_address FROM transfers ORDER BY 1")).scalars())
            closed = conn.execute(text("SELECT count(*) FROM payments")).scalar_one()
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return wallets, {"closed_payments": closed, "database_bytes": size}


def project_path(path: Path) -> str:
    """A path as the results name it: from the project's root when inside it (no machine's own folders)."""
    root = Path(__file__).resolve().parent.parent
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def run_one(args: argparse.Namespace, strategy: str, n: int, w: int) -> dict[str, Any]:
    from tron_sim import Simulator, random_address

    print(f"--- {strategy}: N={n:,} payments over W={w:,} wallets", flush=True)
    idle = wait_quiet(timeout=5 if args.quick else 300)
    bench_db = bench_database(args)
    receiver = Receiver()
    sim = Simulator(block_interval=args.block_interval, solidify_depth=args.solidify_depth, follow_clock=True,
                    usdt_noise_per_block=0)  # the benchmark puts its own --noise into every block
    tmp = Path(tempfile.mkdtemp(prefix="bench_watch_"))
    cycles_file = tmp / "cycles.jsonl"
    child = None
    dispatch_db = None
    try:
        bench_db.migrate()
        wallets = [random_address() for _ in range(w)]
        history: dict[str, Any] = {"closed_payments": 0}
        if args.history:
            from infra.config import Config

            known, history = prepare_history(bench_db.url, args.history, isinstance(bench_db, ExistingDatabase),
                                             Config().late_payment_window_seconds)
            wallets = (known[:w] + wallets)[:w]  # the watched wallets are the history's
        t0 = time.monotonic()
        payments = seed_payments(bench_db.url, n, wallets, receiver.url)
        seed_seconds = time.monotonic() - t0
        pool = list(payments)
        random.shuffle(pool)
        paid: dict[str, str] = {}  # payment id -> tx id
        solid_at: dict[int, float] = {}
        streaming = threading.Event()
        chain = sim.chain
        original = chain._mine_one

        def mine_and_stream() -> None:  # runs under the chain lock in the miner thread
            original()
            head = chain.head.number
            solid_at[head - chain.solidify_depth] = time.time()
            if not streaming.is_set():
                return
            for _ in range(args.noise):
                sim.transfer(random_address(), random.randrange(1, 5_000_000_000))
            for _ in range(args.stray):
                if pool:
                    _, wallet, micro = pool.pop()
                    sim.transfer(wallet, micro + 1)
            for _ in range(args.matching):
                if pool:
                    pid, wallet, micro = pool.pop()
                    paid[pid] = sim.transfer(wallet, micro)

        chain._mine_one = mine_and_stream  # type: ignore[method-assign]
        sim.start()
        seed_cursors(bench_db.url, strategy, wallets, sim.state())
        max_rps = args.max_rps if strategy == "blocks" else args.account_max_rps
        with open(tmp / "watcher.log", "w") as stderr:
            child = subprocess.Popen([sys.executable, "-m", "bench.watcher_proc", "--db-url", bench_db.url,
                                      "--sim-url", sim.url, "--strategy", strategy, "--interval", str(args.interval),
                                      "--max-rps", str(max_rps), "--out", str(cycles_file),
                                      "--block-seconds", str(args.block_interval),
                                      *(["--detect"] if args.detect else []),
                                      *(["--daily-quota", str(args.daily_quota)] if args.daily_quota else [])],
                                     cwd=ROOT, stderr=stderr)
        proc = psutil.Process(child.pid)
        rss_max = 0.0
        sim.reset_counts()
        started = time.time()
        streaming.set()
        stream_end = started + args.duration
        while time.time() < stream_end:
            try:
                rss_max = max(rss_max, proc.memory_info().rss / 2**20)
            except psutil.Error:
                pass
            if child.poll() is not None:
                raise RuntimeError(f"watcher exited: {(tmp / 'watcher.log').read_text()[-2000:]}")
            time.sleep(0.5)
        streaming.clear()
        # the last transfers solidify `depth` blocks later; then up to two cycles to see them
        last_cycle = 0.0
        deadline = time.time() + args.solidify_depth * args.block_interval + 2 * args.interval + 15
        while time.time() < deadline:
            received = {pid for _, kind, pid in receiver.events if kind == "payment.completed"}
            if paid and set(paid) <= received:
                break
            try:
                rss_max = max(rss_max, proc.memory_info().rss / 2**20)
            except psutil.Error:
                pass
            if cycles_file.exists():
                lines = cycles_file.read_text().splitlines()
                if lines:
                    last_cycle = json.loads(lines[-1])["seconds"]
                    deadline = max(deadline, min(time.time() + 600, started + args.duration + 3 * last_cycle))
            time.sleep(0.5)
        elapsed = time.time() - started
        upstream = sim.request_counts()
        child.send_signal(signal.SIGTERM)
        child.wait(60)
        cycles = [json.loads(line) for line in cycles_file.read_text().splitlines()] if cycles_file.exists() else []
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        if dispatch_db is not None:
            dispatch_db.dispose()
        sim.stop()
        receiver.stop()
        bench_db.close()
        shutil.rmtree(tmp, ignore_errors=True)

    completed_at, detected_at = {}, {}
    for at, kind, pid in receiver.events:
        if kind == "payment.completed":
            completed_at.setdefault(pid, at)
        elif kind == "payment.detected":
            detected_at.setdefault(pid, at)
    latencies, seen_latencies = [], []
    for pid, tx in paid.items():
        block = sim.tx_block(tx)
        solid = solid_at.get(block) if block is not None else None  # keyed by the block that became solid
        if pid in completed_at and solid is not None:
            latencies.append(completed_at[pid] - solid)
        if pid in detected_at and block is not None:
            seen_latencies.append(detected_at[pid] - sim.chain.block(block).timestamp / 1000)
    steady = cycles[1:] if len(cycles) > 2 else cycles  # the first cycle also warms connections and caches
    seconds = [c["seconds"] for c in steady]
    requests_total = upstream.get("total", 0)
    sweep_requests = sum(c.get("sweep_requests", 0) for c in cycles)
    swept = sum(c.get("swept", 0) for c in cycles)
    # Cycles start one interval apart: the sweep's rate is per interval of the cycles it ran in (counting over
    # the run's wall time would charge a partial last interval). A full pass: W wallets at the rate it swept here.
    sweep_span = len(cycles) * args.interval
    sweep_rate = swept / sweep_span if sweep_span else 0.0
    result = {
        "strategy": strategy, "payments": n, "wallets": w, **history, "seed_seconds": round(seed_seconds, 2),
        "max_rps": max_rps, "run_seconds": round(elapsed, 1), "cycles": len(cycles),
        "cycle_seconds": {"median": rnd(percentile(seconds, 50), 3), "p95": rnd(percentile(seconds, 95), 3),
                          "max": rnd(max(seconds), 3) if seconds else None},
        "requests_per_cycle": rnd(sum(c["requests"] for c in steady) / len(steady), 1) if steady else None,
        "upstream_requests": requests_total,
        "upstream_requests_per_second": round(requests_total / elapsed, 3),
        "main_scan_requests_per_second": round((requests_total - sweep_requests) / elapsed, 3),
        "sweep_requests_per_second": round(sweep_requests / sweep_span, 3) if sweep_span else None,
        "sweep_items_per_second": round(sweep_rate, 3),
        "sweep_full_pass_seconds": round(w / sweep_rate) if sweep_rate else None,
        "sweep_passes_completed": sum(c.get("passes", 0) for c in cycles),
        "upstream_by_path": by_path(upstream),
        "db_seconds_per_cycle": {"median": rnd(percentile([c["db_seconds"] for c in steady], 50), 3),
                                 "max": rnd(max(c["db_seconds"] for c in steady), 3) if steady else None},
        "db_statements_per_cycle": rnd(percentile([c["db_statements"] for c in steady], 50), 0),
        "paid": len(paid), "detected": len(latencies),
        "detection_latency_s": {"p50": rnd(percentile(latencies, 50)), "p99": rnd(percentile(latencies, 99)),
                                "max": rnd(max(latencies)) if latencies else None},
        "seen": len(seen_latencies),
        "seen_latency_s": {"p50": rnd(percentile(seen_latencies, 50)), "p99": rnd(percentile(seen_latencies, 99)),
                           "max": rnd(max(seen_latencies)) if seen_latencies else None},
        "upstream_requests_per_day_at_this_rate": round(requests_total / elapsed * 86_400),
        "watcher_rss_mb": round(rss_max, 1),
        "credited": sum(c["credited"] for c in cycles), "unmatched": sum(c["unmatched"] for c in cycles),
        "errors": [e for c in cycles for e in c["errors"]][:5],
        "machine_busy_before_percent": idle,
    }
    print(json.dumps(result), flush=True)
    return result


def by_path(counts: dict[str, int]) -> dict[str, int]:
    """Upstream requests per endpoint, the per-wallet TronGrid listings counted together."""
    out: dict[str, int] = {}
    for path, n in counts.items():
        if path != "total":
            key = re.sub(r"^/v1/accounts/[^/]+/", "/v1/accounts/<wallet>/", path)
            out[key] = out.get(key, 0) + n
    return out


def plot(path: Path, results: list[dict[str, Any]], interval: float) -> None:
    """Detection latency and upstream requests per second against size, one line per strategy."""
    sizes = sorted({(r["payments"], r["wallets"]) for r in results})
    strategies = list(dict.fromkeys(r["strategy"] for r in results))
    labels = [f"{n:,}/{w:,}" for n, w in sizes]
    by = {s: [next((r for r in results if r["strategy"] == s and (r["payments"], r["wallets"]) == size), None)
              for size in sizes] for s in strategies}
    latency = {f"{s} p99": [r and r["detection_latency_s"]["p99"] for r in by[s]] for s in strategies}
    latency |= {f"{s} p50": [r and r["detection_latency_s"]["p50"] for r in by[s]] for s in strategies}
    svg_plot(path, "Watcher: detection latency and upstream requests against size", [
        {"title": "detection latency (s, log scale)", "ylabel": "seconds", "log": True,
         "xlabel": "payments / wallets", "xlabels": labels, "line": interval + 2,
         "line_label": "target: interval + 2 s", "series": latency},
        {"title": "upstream requests per second (log scale)", "ylabel": "requests / s", "log": True,
         "xlabel": "payments / wallets", "xlabels": labels, "line": 1.0, "line_label": "target (blocks): 1/s",
         "series": {s: [r and r["upstream_requests_per_second"] for r in by[s]] for s in strategies}},
    ])


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        n, w = item.lower().split("x")
        sizes.append((int(n), int(w)))
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watcher", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--sizes", default="100x100,10000x1000,100000x10000", help="NxW,... (payments x wallets)")
    parser.add_argument("--strategies", default="blocks,account")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of transfer stream per run")
    parser.add_argument("--interval", type=float, default=10.0, help="POLLING_INTERVAL_SECONDS")
    parser.add_argument("--max-rps", type=float, default=10.0, help="TRONGRID_MAX_RPS of the blocks runs")
    parser.add_argument("--account-max-rps", type=float, default=1000.0,
                        help="TRONGRID_MAX_RPS of the account runs (lifted: at 10 a cycle needs W/10 s)")
    parser.add_argument("--block-interval", type=float, default=3.0)
    parser.add_argument("--solidify-depth", type=int, default=2)
    parser.add_argument("--noise", type=int, default=100, help="USDT transfers to random addresses per block")
    parser.add_argument("--matching", type=int, default=2, help="exact payments per block")
    parser.add_argument("--stray", type=int, default=1, help="wrong-amount transfers to watched wallets per block")
    parser.add_argument("--out", type=Path, default=RESULTS / "watcher.json")
    parser.add_argument("--detect", action="store_true", help="DETECT_UNCONFIRMED: measure payment.detected too")
    parser.add_argument("--daily-quota", type=int, default=None,
                        help="TRONGRID_DAILY_QUOTA of the watcher (the simulator is no TronGrid host: none by default)")
    parser.add_argument("--real-pace", action="store_true",
                        help="TRON's pace at the defaults: blocks strategy, 3 s blocks solidified 19 deep, a 3 s "
                             "cycle, detection on, a free key's daily quota, 200 payments, 2 minutes of transfers "
                             "(--sizes/--duration apply)")
    parser.add_argument("--history", type=int, default=0,
                        help="closed payments (with their logs, transfers and events: bench/growth.py's history, "
                             "none within the late window) in the database before the run")
    parser.add_argument("--history-db", default=None,
                        help="with --history: a database `bench.growth --keep` left (used instead of loading one; "
                             "left in place)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the results already in --out for strategies/sizes this run does not measure")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.duration, args.interval, args.block_interval = "20x10", 3.0, 1.0, 0.5
        args.noise, args.account_max_rps = 5, 100.0
    if args.real_pace:
        args.interval, args.block_interval, args.solidify_depth, args.detect = 3.0, 3.0, 19, True
        args.daily_quota = args.daily_quota or 100_000  # a free TronGrid key's, as on TronGrid's hosts
        args.strategies = "blocks" if args.strategies == parser.get_default("strategies") else args.strategies
        args.sizes = "200x200" if args.sizes == parser.get_default("sizes") else args.sizes
        args.duration = 120.0 if args.duration == parser.get_default("duration") else args.duration
    sizes = parse_sizes(args.sizes)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    results = [run_one(args, strategy, n, w) for strategy in strategies for n, w in sizes]
    if args.merge and args.out.exists():
        def key(r: dict[str, Any]) -> tuple[Any, ...]:
            return r["strategy"], r["payments"], r["wallets"], r.get("closed_payments", 0)

        measured = {key(r) for r in results}
        kept = [dict(r, measured_by=json.loads(args.out.read_text()).get("command"))
                for r in json.loads(args.out.read_text())["results"] if key(r) not in measured]
        results = kept + results
        strategies = list(dict.fromkeys(r["strategy"] for r in results))
        sizes = sorted({(r["payments"], r["wallets"]) for r in results})
        order = {s: i for i, s in enumerate(["blocks", "account"])}
        results.sort(key=lambda r: (order.get(r["strategy"], 9), r["payments"], r["wallets"],
                                    r.get("closed_payments", 0)))

    headers = ["strategy", "N payments", "W wallets", "closed payments", "cycle s (median/max)", "requests/cycle",
               "main scan req/s", "sweep req/s", "sweep full pass s",
               "DB s/cycle (median)", "DB stmts/cycle", "detect p50 s", "detect p99 s", "detected",
               "seen p50/p99/max s", "req/day", "watcher RSS MB"]
    rows = [[r["strategy"], f"{r['payments']:,}", f"{r['wallets']:,}", f"{r.get('closed_payments', 0):,}",
             f"{r['cycle_seconds']['median']} / {r['cycle_seconds']['max']}", r["requests_per_cycle"],
             r.get("main_scan_requests_per_second", r["upstream_requests_per_second"]),
             r.get("sweep_requests_per_second"), r.get("sweep_full_pass_seconds"),
             r["db_seconds_per_cycle"]["median"], r["db_statements_per_cycle"],
             r["detection_latency_s"]["p50"], r["detection_latency_s"]["p99"], f"{r['detected']}/{r['paid']}",
             "/".join(str(v) for v in (r.get("seen_latency_s") or {}).values()) if r.get("seen") else "-",
             r.get("upstream_requests_per_day_at_this_rate"), r["watcher_rss_mb"]] for r in results]
    table = print_table(headers, rows)
    write_json(args.out, {
        "benchmark": "watcher", "quick": args.quick, "machine": machine(),
        "command": "python -m bench.watcher " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {k: (project_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results, "table": table,
    })
    plot(args.out.with_suffix(".svg"), results, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
