"""Unmatched money on a busy wallet: does it slow the watcher, or another wallet's payment?

    .venv/bin/python -m bench.dust                   # 10,000 open payments, 50 dust transfers, both strategies
    .venv/bin/python -m bench.dust --open 2000 --dust 20 --runs 3

For each strategy, three scenarios on a fresh database (real PostgreSQL) and the TronGrid simulator, in one
process:
  * quiet: a wallet with --open open payments (bulk-inserted), and an unrelated payment on another wallet paid in
    one block;
  * dust: the same, and --dust transfers of 0.000001 USDT to the busy wallet mined in the same block as the payment;
  * dust, small wallet: the same dust to a wallet with --small-open open payments: what the dust costs when the
    wallet's open payments are few (the cost of unmatched money must not grow with them).
Per run it reports the cycle that reads that block (seconds), how long the unrelated payment took from its block's
solidification to `completed`, and the audit rows and event bytes the dust wrote. Medians over --runs.
"""
from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

from sqlalchemy import func, select, text

from bench.common import DEFAULT_PG, BenchDatabase, print_table

BUSY = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"
OTHER = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"
PAYER = "TVKG4gUar24bpAVrDv4GSzyDRtPkjPkogL"
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


def insert_open_payments(session: Any, wallet: str, count: int, expired: int = 0, prefix: str = "busy") -> None:
    """`count` open payments on `wallet` in one statement, the first `expired` of them expired 10 minutes ago (in the
    late window), the others pending for a day; each awaits its own amount from 100 USDT up, created a millisecond
    apart in the last 20 seconds (the newest is `<prefix>-<count - 1>`)."""
    session.execute(text(
        """
        INSERT INTO payments (id, order_id, wallet_address, expected_amount_usdt, requested_amount_usdt,
                              received_amount_usdt, underpayment_tolerance_usdt, status, callback_url,
                              callback_attempts, callback_success, paid_late, metadata, request_fingerprint,
                              created_at, expires_at, updated_at)
        SELECT gen_random_uuid(), :prefix || '-' || n, :wallet, 100 + n * 0.0001, 100 + n * 0.0001, 0, 0,
               CASE WHEN n < :expired THEN 'expired'::payment_status ELSE 'pending'::payment_status END,
               'http://127.0.0.1:9/hook', 0, false, false, '{"cart": 1}', 'f',
               now() - interval '20 seconds' + n * interval '1 ms',
               CASE WHEN n < :expired THEN now() - interval '10 minutes' ELSE now() + interval '1 day' END, now()
        FROM generate_series(0, :count - 1) AS n
        """), {"wallet": wallet, "count": count, "expired": expired, "prefix": prefix})


def fill(db: Any, open_payments: int) -> uuid.UUID:
    """The busy wallet's open payments and the unrelated payment; returns the latter's id."""
    with db.transaction() as s:
        insert_open_payments(s, BUSY, open_payments)
        other = uuid.uuid4()
        s.execute(text(
            """
            INSERT INTO payments (id, order_id, wallet_address, expected_amount_usdt, requested_amount_usdt,
                                  received_amount_usdt, underpayment_tolerance_usdt, status, callback_url,
                                  callback_attempts, callback_success, paid_late, metadata, request_fingerprint,
                                  created_at, expires_at, updated_at)
            VALUES (:id, 'unrelated', :wallet, 25, 25, 0, 0, 'pending', 'http://127.0.0.1:9/hook', 0, false, false,
                    '{}', 'f', now() - interval '20 seconds', now() + interval '1 day', now())
            """), {"id": other, "wallet": OTHER})
        s.execute(text("ANALYZE payments"))  # as autovacuum would soon after such an insert
    return other


def run_once(server: str, strategy: str, open_payments: int, dust: int) -> dict[str, float]:
    from infra.config import Config
    from ledger.checkout import open_ledger
    from models import Payment, PaymentLog, PaymentStatus, WebhookEvent
    from tron_client import TronClient
    from tron_sim import Simulator
    from watcher import Watcher

    bench_db = BenchDatabase(server, "dust")
    bench_db.migrate()
    db = open_ledger(bench_db.url, Config().public_base_url)
    try:
        with Simulator(block_interval=0, solidify_depth=2, usdt_contract=USDT, follow_clock=True) as sim:
            cfg = Config(database_url=bench_db.url, trongrid_api_url=sim.url, watcher_strategy=strategy,
                         trongrid_max_rps=2000.0, polling_interval_seconds=0.2, tron_block_seconds=0.0001,
                         upstream_clock_skew_seconds=86400.0, allow_private_callbacks=True, watcher_enabled=False,
                         webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            other = fill(db, open_payments)
            client = TronClient(cfg.trongrid_api_url, cfg.usdt_contract, max_rps=cfg.trongrid_max_rps, timeout=5.0)
            watcher = Watcher(db, cfg, client=client)
            try:
                watcher.run_once()  # the steady state: cursors at the head
                with db.Session() as s:
                    logs_before = s.scalar(select(func.count()).select_from(PaymentLog))
                for _ in range(dust):
                    sim.transfer(BUSY, 1, from_=PAYER)
                sim.transfer(OTHER, 25_000_000, from_=PAYER)
                sim.solidify()
                solid = time.monotonic()
                cycle = detected = None
                while detected is None and time.monotonic() - solid < 120:
                    started = time.monotonic()
                    watcher.run_once()
                    cycle = max(cycle or 0.0, time.monotonic() - started)
                    with db.Session() as s:
                        if s.get(Payment, other).status == PaymentStatus.completed:
                            detected = time.monotonic() - solid
                with db.Session() as s:
                    logs = s.scalar(select(func.count()).select_from(PaymentLog)) - logs_before
                    event_bytes = s.scalar(select(func.coalesce(func.max(func.length(WebhookEvent.body)), 0))
                                           .where(WebhookEvent.type == "transfer.unmatched"))
                    unmatched = s.scalar(select(func.count()).select_from(WebhookEvent)
                                         .where(WebhookEvent.type == "transfer.unmatched"))
            finally:
                watcher.stop()
    finally:
        db.dispose()
        bench_db.close()
    return {"cycle_s": cycle or 0.0, "detection_s": detected if detected is not None else float("inf"),
            "audit_rows": logs, "largest_event_bytes": event_bytes, "unmatched_events": unmatched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--open", type=int, default=10_000, help="open payments on the busy wallet")
    parser.add_argument("--dust", type=int, default=50, help="dust transfers in the dust scenario")
    parser.add_argument("--small-open", type=int, default=100, help="open payments on the small wallet")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--strategies", default="account,blocks")
    args = parser.parse_args()
    rows = []
    for strategy in args.strategies.split(","):
        for name, open_payments, dust in (("quiet", args.open, 0), ("dust", args.open, args.dust),
                                          ("dust, small wallet", args.small_open, args.dust)):
            runs = [run_once(args.pg_url, strategy, open_payments, dust) for _ in range(args.runs)]
            median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append([strategy, name, open_payments, f"{median['cycle_s']:.3f}", f"{median['detection_s']:.3f}",
                         int(median["audit_rows"]), int(median["unmatched_events"]),
                         int(median["largest_event_bytes"])])
    print(f"medians of {args.runs} runs")
    print_table(["strategy", "scenario", "open payments", "slowest cycle s", "unrelated payment detected after s",
                       "audit rows", "unmatched events", "largest event bytes"], rows)


if __name__ == "__main__":
    main()
