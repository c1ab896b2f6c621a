"""The watcher as its own process (what `python watcher.py` runs: the watcher loop and a webhook
dispatcher woken after each cycle that wrote events), instrumented for bench/watcher.py:

    python -m bench.watcher_proc --db-url URL --sim-url URL --strategy blocks --interval 10 --max-rps 10 --out F

Runs the real `Watcher.run_forever()` loop with the production TronClient; after every cycle it appends
one JSON line to F: the CycleResult fields, the time spent in database statements (SQLAlchemy cursor
execute events on the watcher's engine) and their count, and this process's RSS. SIGTERM stops it.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.watcher_proc")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--sim-url", required=True)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--max-rps", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--block-seconds", type=float, default=3.0)
    parser.add_argument("--detect", action="store_true")
    parser.add_argument("--daily-quota", type=int, default=None)
    args = parser.parse_args(argv)

    import psutil
    from sqlalchemy import event

    from infra.config import Config
    from infra.logging_setup import configure_logging
    from ledger.checkout import open_ledger
    from watcher import Watcher, run_worker

    config = Config(database_url=args.db_url, trongrid_api_url=args.sim_url, watcher_strategy=args.strategy,
                    polling_interval_seconds=args.interval, trongrid_max_rps=args.max_rps, watcher_enabled=True,
                    allow_private_callbacks=True, log_level="WARNING", detect_unconfirmed=args.detect,
                    tron_block_seconds=args.block_seconds, trongrid_daily_quota=args.daily_quota,
                    webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    configure_logging(config.log_level, config.log_format)
    db = open_ledger(args.db_url, config.public_base_url)
    totals = {"seconds": 0.0, "statements": 0}
    local = threading.local()

    @event.listens_for(db.engine, "before_cursor_execute")
    def _before(*_a: object) -> None:
        local.t = time.perf_counter()

    @event.listens_for(db.engine, "after_cursor_execute")
    def _after(*_a: object) -> None:
        totals["seconds"] += time.perf_counter() - local.t
        totals["statements"] += 1

    me = psutil.Process()
    out = open(args.out, "a", buffering=1)  # noqa: SIM115 - open for the life of the process

    class BenchWatcher(Watcher):
        def run_once(self):  # type: ignore[no-untyped-def]
            db_before, n_before = totals["seconds"], totals["statements"]
            started = time.time()
            result = super().run_once()
            if result is not None:
                out.write(json.dumps({
                    "started": started, "finished": time.time(), "strategy": result.strategy,
                    "seconds": result.seconds, "requests": result.requests, "wallets": result.wallets,
                    "sweep_requests": result.sweep_requests, "swept": result.swept, "passes": result.passes,
                    "detected_unconfirmed": result.detected_unconfirmed,
                    "blocks": result.blocks, "transfers_seen": result.transfers_seen, "credited": result.credited,
                    "unmatched": result.unmatched, "expired": result.expired, "errors": result.errors[-3:],
                    "blocks_behind": result.blocks_behind, "db_seconds": totals["seconds"] - db_before,
                    "db_statements": totals["statements"] - n_before, "rss_mb": me.memory_info().rss / 2**20,
                }) + "\n")
            return result

    # What `python watcher.py` runs; the dispatcher gets its own engine, so the watcher's statement
    # counts stay the watcher's.
    run_worker(db, config, watcher_class=BenchWatcher, dispatch_db=open_ledger(args.db_url, config.public_base_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
