"""The watcher: finds confirmed USDT transfers to watched wallets and credits payments.

One watcher works across all processes and hosts: the holder of a PostgreSQL advisory lock taken on a dedicated
connection (outside the pool, with TCP keepalives). `python watcher.py` runs it standalone; the app starts it as a
thread when WATCHER_ENABLED.

Each cycle it accepts a plausible solid head (chain_view), reads the chain with one strategy (scanning:
``account`` per wallet on TronGrid's /v1 index, ``blocks`` every solidified block), runs a slice of the
reconciliation (reconcile) and reports to /health through the database.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg2
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

import migrate
from chain.answers import TronError, public_error
from chain.chain_view import AcceptedHead, ChainView, read_plausible_head
from chain.claims import take_requests
from chain.head import HeadWatch
from chain.quota import DailyRequests, requests_per_day
from chain.reconcile import Reconciler
from chain.scanning import RECONCILE_SHARE, SET_ASIDE_BLOCKS, AccountScan, BlockScan, CycleResult, Scan, Stalls
from chain.upstream_watch import UpstreamTransitions
from chain.watched import WatchedWallets
from database import WATCHER_APPLICATION_NAME, Database, DatabaseError, resolve_database_url
from delivery.webhooks import WebhookDispatcher
from infra import instruments
from infra.config import Config, first_line, startup_config
from infra.lifecycle import interrupt_on_sigterm
from infra.logging_setup import FailureLog
from ledger.checkout import open_ledger
from ledger.detection import clear_read_past
from ledger.events import log_event
from ledger.service_state import WATCHER_STATUS, read_state, write_state
from ledger.stats import read_counts
from models import TransferStatus
from notify.dispatcher import NotificationDispatcher
from notify.outbox import with_notifications
from rates.refresher import start_refresher
from sandbox.inbox import private_callbacks
from sandbox.node import with_sandbox_upstream
from tron_client import TronClient, make_client

logger = logging.getLogger(__name__)

WATCHER_LOCK_ID = 0x7472_6F6E_0003
SWITCH_TO_BLOCKS = 0.7  # share of the per-cycle request budget at which `auto` leaves `account`
SWITCH_TO_ACCOUNT = 0.4  # ... and comes back (hysteresis)
# Cycles start this long after a block's time: TRON's blocks reach TronGrid's nodes within about a second.
ALIGN_OFFSET_SECONDS = 1.0
LATE_BLOCK_RETRY_SECONDS = 0.5  # a cycle that found no new block, when one was due, looks again this soon
_ADDRESS = re.compile(r"\bT[1-9A-HJ-NP-Za-km-z]{33}\b")


def public_text(text: str | None) -> str | None:
    """/health is public: no address of a merchant's wallet in what it shows."""
    return _ADDRESS.sub("<address>", text) if text else text


# --- what the log says of the cycles ----------------------------------------------------------------

SUMMARY_SECONDS = 300.0  # an INFO line on the cycles of the last five minutes, even when all were idle


class CycleLog:
    """A cycle that found, expired or failed anything is an INFO line; an idle one (a cycle a second in the sandbox)
    is DEBUG, and every SUMMARY_SECONDS one INFO line sums up the cycles since the last."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.since = clock()
        self.cycles = self.idle = self.requests = self.transfers = 0

    def log(self, result: CycleResult) -> None:
        busy = bool(result.transfers_seen or result.expired or result.reconciled or result.errors or result.refused)
        logger.log(logging.INFO if busy else logging.DEBUG,
                   "watcher cycle: %s, %d wallets, %d transfers (%d credited, %d unmatched, %d rejected, "
                   "%d reconciled), %d expired, %d requests, %.2fs", result.strategy, result.wallets,
                   result.transfers_seen, result.credited, result.unmatched, result.rejected, result.reconciled,
                   result.expired, result.requests, result.seconds)
        self.cycles += 1
        self.idle += not busy
        self.requests += result.requests
        self.transfers += result.transfers_seen
        elapsed = self.clock() - self.since
        if elapsed >= SUMMARY_SECONDS:
            logger.info("watcher: %d cycles in the last %.0f s (%d idle), %d transfers, %d upstream requests; "
                        "strategy %s, %d wallets", self.cycles, elapsed, self.idle, self.transfers, self.requests,
                        result.strategy, result.wallets)
            self.since = self.clock()
            self.cycles = self.idle = self.requests = self.transfers = 0


# --- the leader lock ---------------------------------------------------------------------------

class LeaderLock:
    """A session-level advisory lock on its own connection; lost when the connection dies."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn: Any = None
        self.held = False
        self.failures = FailureLog(logger, "watcher lock")

    def _connect(self) -> Any:
        # keepalives: a vanished host is noticed within 10 + 5 * 3 = 25 s and its lock released.
        # The server side must notice too, since it is the server that releases the lock:
        # the same keepalive settings for this session's backend.
        conn = psycopg2.connect(self.dsn, keepalives=1, keepalives_idle=10, keepalives_interval=5,
                                keepalives_count=3, connect_timeout=10,
                                application_name=f"{WATCHER_APPLICATION_NAME}:{os.getpid()}",
                                options="-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
                                        "-c tcp_keepalives_count=3")
        conn.autocommit = True
        return conn

    def acquire(self) -> bool:
        """True while this process holds the lock (checked every cycle). A stand-by keeps its one
        connection and asks again on it; a broken connection is replaced on the next call."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn, self.held = self._connect(), False
            with self.conn.cursor() as cur:
                if self.held:  # the lock lives exactly as long as this connection: check it is alive
                    cur.execute("SELECT 1")
                else:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (WATCHER_LOCK_ID,))
                    self.held = bool(cur.fetchone()[0])
            self.failures.succeeded()
            return self.held
        except psycopg2.Error as exc:
            self.failures.failed(f"database unreachable: {first_line(exc)}")
            self.release()
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn, self.held = None, False


# --- the strategy ------------------------------------------------------------------------------

class Strategies:
    """Which strategy reads the chain (`auto`: `account` while the watched wallets need less than SWITCH_TO_BLOCKS of
    the per-cycle request budget, `blocks` above it and back below SWITCH_TO_ACCOUNT; `blocks` without a /v1
    upstream, and under a daily quota whenever `account` would cost more a day), and the hand-over when it
    changes: the new one starts where the old one stopped."""

    def __init__(self, db: Database, config: Config, client: TronClient, view: ChainView, blocks: BlockScan) -> None:
        self.db, self.config, self.client, self.view, self.blocks = db, config, client, view, blocks
        self.quota = DailyRequests(config, client)
        self.current: str | None = None

    def budget_per_cycle(self) -> float:
        """Requests per cycle: TRONGRID_MAX_RPS over one interval, or what the day's quota spreads over it if less."""
        rate, quota = self.config.trongrid_max_rps, self.quota.quota()
        if quota is not None:
            rate = min(rate, quota / 86_400)
        return rate * self.config.polling_interval_seconds

    def choose(self, wallet_count: int) -> str:
        configured = self.config.watcher_strategy
        if configured != "auto":
            return configured
        if not self.client.has_v1_api():
            return "blocks"
        quota = self.quota.quota()
        if quota is not None and requests_per_day(self.config, "account", wallet_count) > min(
                quota, requests_per_day(self.config, "blocks", wallet_count)):
            return "blocks"  # under a daily quota, account only while it costs less a day (with detection: never)
        budget = self.budget_per_cycle()
        current = self.current or "account"
        if current == "account" and wallet_count > SWITCH_TO_BLOCKS * budget:
            current = "blocks"
        elif current == "blocks" and wallet_count < SWITCH_TO_ACCOUNT * budget:
            current = "account"
        return current

    def switch(self, new: str, wallets: dict[str, datetime], head: AcceptedHead) -> None:
        """Start `new` where the current strategy stopped (also `blocks` again when its cursor is missing)."""
        old = self.current
        logger.info("watcher strategy: %s -> %s (%d wallets with candidates, budget %.0f requests per cycle)",
                    old or "none", new, len(wallets), self.budget_per_cycle())
        if new == "blocks":
            self.blocks.seed(head.number, head.timestamp, wallets)
        with self.db.transaction() as session:
            if old == "blocks" and new != "blocks":
                block = self.view.state(session, "block_cursor")
                if block is not None:
                    self.view.save_wallet_cursors(session, list(wallets), int(block["timestamp"]), only_lower=True)
            self.view.set_state(session, "watcher_strategy", {"strategy": new, "since": time.time()})
        self.current = new


# --- the watcher -------------------------------------------------------------------------------

class Watcher:
    """One cycle after another while this process holds the leader lock: a plausible solid head, the chosen
    strategy's scan, a slice of the reconciliation, and the report /health reads."""

    def __init__(self, db: Database, config: Config, client: TronClient | None = None, *,
                 on_events: Callable[[], None] | None = None) -> None:
        """`on_events` is called after a cycle that may have written webhook events (the dispatcher's `notify`),
        so they go out at once instead of at the dispatcher's next poll."""
        self.db = db
        self.config = config
        self.on_events = on_events
        self.client = client or make_client(config)
        self.view = ChainView(config)
        self.lock = LeaderLock(db.url)
        self.stop_event = threading.Event()
        self.wakeup = threading.Event()  # a payer's claim: the next cycle starts now
        failed_txs: set[str] = set()  # failed transactions, fetched and logged once per process
        stalls = Stalls(config.unreadable_wait_seconds)  # what holds a wallet or the block cursor, and since when
        self.account = AccountScan(db, config, self.client, self.view, self.stop_event, failed_txs, stalls=stalls)
        self.blocks = BlockScan(db, config, self.client, self.view, self.stop_event, failed_txs, stalls=stalls)
        self.reconciler = Reconciler(db, config, self.client, self.view, self.stop_event, failed_txs, stalls=stalls)
        self.strategies = Strategies(db, config, self.client, self.view, self.blocks)
        self.head_watch = HeadWatch(db, config, self.client, self.view)
        self.watched = WatchedWallets(db, self.view)
        self.quota = self.strategies.quota
        if config.detect_unconfirmed:
            self.blocks.head_watch = self.head_watch
        self.thread: threading.Thread | None = None
        self.is_leader = False
        self.last_result: CycleResult | None = None
        self.saw_new_block: bool | None = None  # whether the last cycle found a block newer than the one before
        self.cycle_failures = FailureLog(logger, "watcher cycle")  # logged when they start, then reminders
        self.summary = CycleLog()
        # upstream.degraded / upstream.recovered once a change has held for more than one interval
        self.upstream_transitions = UpstreamTransitions(config.polling_interval_seconds)

    # lifecycle
    def start(self) -> None:
        if self.thread is not None:
            return
        self.thread = threading.Thread(target=self.run_forever, name="watcher", daemon=True)
        self.thread.start()

    def request_stop(self) -> None:
        """End the loop after the current cycle, at once if it is pausing (safe in a signal handler)."""
        self.stop_event.set()
        self.wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.request_stop()
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None
        self.lock.release()
        instruments.WATCHER_LEADER.set(0)

    def run_forever(self) -> None:
        logger.info("watcher started (strategy %s, every %.2fs, upstreams %s)", self.config.watcher_strategy,
                    self.config.polling_interval_seconds, ", ".join(u.name for u in self.client.upstreams))
        while True:
            started = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:  # one bad cycle must never stop the loop
                self.cycle_failures.failed(f"{type(exc).__name__}: {first_line(exc)}", exc_info=True)
            self.wakeup.wait(self.pause_after(started))
            self.wakeup.clear()
            if self.stop_event.is_set():
                break
        logger.info("watcher stopped")

    def pause_after(self, started: float) -> float:
        """Seconds until the next cycle. Cycles start an interval apart: a cycle's own length (the sweep's share, a
        slow upstream) is not added to the time a transfer waits to be seen. At the chain's pace (blocks of a second
        or more, and chain time keeping up with this machine's clock) they start ALIGN_OFFSET_SECONDS after a
        block's time, when the block has reached the upstreams: a free-running poll would see a block anywhere
        up to an interval late. A cycle that found no new block looks again soon (the block was late)."""
        interval = self.config.polling_interval_seconds
        now = time.monotonic()
        free = max(0.0, interval - (now - started))
        result = self.last_result
        block = self.config.tron_block_seconds
        head_ms = self.head_watch.head.timestamp if self.config.detect_unconfirmed and self.head_watch.head \
            else result.head_timestamp if result is not None else None
        if head_ms is None or block < 1.0:
            return free
        wall = time.time()
        late = wall - head_ms / 1000
        if not 0 <= late < 10 * max(interval, block):
            return free  # chain time does not follow this clock (a node far behind, or a test's chain)
        if late > block + ALIGN_OFFSET_SECONDS and self.saw_new_block is False:
            return min(free, LATE_BLOCK_RETRY_SECONDS)  # the next block is due and was not there yet
        target = head_ms / 1000 + ALIGN_OFFSET_SECONDS
        steps = max(1, math.ceil((wall - target) / interval + 1e-9))
        return max(0.0, target + steps * interval - wall)

    def run_once(self) -> CycleResult | None:
        """One cycle if this process holds the leader lock; None otherwise."""
        held = self.lock.acquire()
        if held != self.is_leader:
            logger.info("watcher %s the leader lock", "took" if held else "does not hold")
            self.is_leader = held
        instruments.WATCHER_LEADER.set(1 if held else 0)
        if not held:
            return None
        started = time.monotonic()
        before, sweep_before = self.client.request_count, self.reconciler.client.request_count
        try:
            result = self.cycle()
        except TronError as exc:  # every upstream down or pausing us: nothing read, cursors unchanged
            self.cycle_failures.failed(f"upstream unavailable: {exc}")
            result = CycleResult(self.strategies.current or self.config.watcher_strategy, errors=[public_error(exc)])
        except SQLAlchemyError:
            raise  # the database is away: nothing can be reported either; the loop logs it and goes on
        except Exception as exc:  # an answer or a state nobody foresaw: reported in /health, the loop goes on
            self.cycle_failures.failed(f"{type(exc).__name__}: {first_line(exc)}", exc_info=True)
            result = CycleResult(self.strategies.current or self.config.watcher_strategy,  # the log has the text
                                 errors=[f"cycle failed: {type(exc).__name__}"])
        else:
            self.cycle_failures.succeeded()
        result.sweep_requests = self.reconciler.client.request_count - sweep_before
        result.requests = self.client.request_count - before + result.sweep_requests
        result.seconds = time.monotonic() - started
        instruments.CYCLE_SECONDS.observe(result.seconds)
        self.last_result = result
        self.report(result)
        self.events_written(result)
        return result

    def wake(self) -> None:
        """Start the next cycle now (a payer's claim waits for it), not at the end of the pause."""
        self.wakeup.set()

    def events_written(self, result: CycleResult) -> None:
        """Wake the dispatcher when the cycle may have written webhook events (again after the sweep)."""
        if self.on_events is not None and (result.transfers_seen or result.expired or result.detected_unconfirmed):
            self.on_events()

    def cycle(self) -> CycleResult:
        with self.db.Session() as session:
            previous = self.view.state(session, "watcher_strategy")
            block_cursor = self.view.state(session, "block_cursor")
            read_floor = self.view.read_floor(session)
        has_block_cursor = block_cursor is not None
        wallets, listed_at = self.watched.current(read_floor)  # listed at the database's clock, as created_at
        if previous:  # another process may have led, and switched, since this one last did
            self.strategies.current = previous.get("strategy")
        current = self.strategies.current
        if not wallets and current != "blocks" and self.config.watcher_strategy != "blocks":
            return CycleResult(current or "account")  # nothing to watch: no upstream call at all
        strategy = self.strategies.choose(len(wallets))
        share = 1.0 - RECONCILE_SHARE if self.reconciler.shares_the_scan_upstream() else 1.0
        for scan in (self.account, self.blocks):
            scan.share = share
            scan.start_cycle()
        cap = self.quota.reconcile_per_cycle(strategy, len(wallets))
        self.reconciler.account.budget_cap = self.reconciler.blocks.budget_cap = cap
        result = CycleResult(strategy, wallets=len(wallets))
        head = read_plausible_head(self.db, self.client, self.view, result.refused, result.errors)
        if head is None:
            return result
        result.head_timestamp, result.head_accepted_at = head.timestamp, head.accepted_at
        if strategy != current or (strategy == "blocks" and not has_block_cursor):
            self.strategies.switch(strategy, wallets, head)
        if self.config.detect_unconfirmed:
            self.detect(head, wallets, self.blocks if strategy == "blocks" else self.account, result)
        self.serve_claims(wallets, head, result)
        if strategy == "blocks":
            self.blocks.run(wallets, listed_at, head.number, head.timestamp, result)
        else:
            self.account.run(wallets, head.timestamp, result)
        with self.db.transaction() as session:
            cursor = self.view.state(session, "block_cursor") if strategy == "blocks" else None
            clear_read_past(session, self.config.chain_key, int(cursor["number"]) if cursor else None)
        self.events_written(result)  # what the scan credited goes out now, not after the sweep
        self.reconciler.run(wallets, head.timestamp, result)
        return result

    def detect(self, solid: AcceptedHead, wallets: dict[str, datetime], reader: Scan, result: CycleResult) -> None:
        """Read above the solid head (chain/head.py) within `reader`'s budget, and send what it announced now: a
        payer's "payment seen" should not wait for the solid scan."""
        before = self.head_watch.head.number if self.head_watch.head else None
        self.head_watch.run(solid, wallets, reader, result)
        after = self.head_watch.head.number if self.head_watch.head else None
        self.saw_new_block = after is not None and after != before
        self.head_watch.settle(solid)
        if result.detected_unconfirmed:
            self.events_written(result)

    def serve_claims(self, wallets: dict[str, datetime], head: AcceptedHead, result: CycleResult) -> None:
        """Read each wallet a payer's claim asked for (chain/claims.py) up to the claimed transaction's block, before
        the scan: through the TRC20 index, from the wallet's cursor, crediting in chain order. Without a /v1
        upstream the block scan reaches that block in its turn."""
        with self.db.transaction() as session:
            claims = take_requests(session)
        if not claims or not self.client.has_v1_api():
            return
        for wallet, claim in claims.items():
            if wallet not in wallets:
                continue  # no payment of this wallet may take money any more
            until = min(int(claim["block_timestamp"]), head.timestamp)
            try:
                self.account.read_claimed(wallet, wallets[wallet], until, result)
            except TronError as exc:
                logger.warning("claimed transaction %s: wallet not read now, the scan reads it in turn: %s",
                               claim.get("transaction_hash"), exc)

    # reporting
    def report(self, result: CycleResult) -> None:
        behind = None
        if result.read_up_to is not None and result.head_timestamp is not None:
            behind = max(0.0, (result.head_timestamp - result.read_up_to) / 1000)
        elif not result.wallets and not result.errors:
            behind = 0.0  # nothing to watch: nothing to be behind on
        with self.db.Session() as session:
            progress = self.view.state(session, "reconcile") or {}
            transfers = read_counts(session).by("transfers", TransferStatus)
            set_aside = {"records": transfers[TransferStatus.set_aside.value],
                         "blocks": len(self.view.state(session, SET_ASIDE_BLOCKS) or [])}
        problems = result.refused + result.errors
        if set_aside["records"] or set_aside["blocks"]:
            problems.append(f"{set_aside['records']} transaction(s) and {set_aside['blocks']} block(s) set aside as "
                            "unreadable (GET /transfers?status=set_aside); the reconciliation keeps asking for them")
        head = self.head_watch.head if self.config.detect_unconfirmed else None
        status = {
            "network": self.config.tron_network,
            "strategy": result.strategy,
            "last_cycle_finished": time.time(),
            "last_cycle_seconds": round(result.seconds, 3),
            "seconds_behind": behind,
            "blocks_behind": result.blocks_behind,
            "paused_until": self.client.paused_until,
            "wallets": result.wallets,
            "requests": result.requests,
            "last_error": public_text(problems[-1] if problems else None),
            "errors": len(result.errors),
            "refused": [public_text(r) for r in result.refused],
            "upstreams": [{**state, "last_error": public_text(state["last_error"])}
                          for state in self.client.states()],
            "reconciliation": {"mode": progress.get("mode", "off"),
                               "last_complete_pass_at": progress.get("last_complete_at"),
                               "last_error": public_text(self.reconciler.last_error)},
            "detect_unconfirmed": self.config.detect_unconfirmed,
            "blocks_above_solid": head.number - self.head_watch.solid_number
            if head is not None and self.head_watch.solid_number is not None else None,
            "set_aside": set_aside,
            "daily_requests": self.quota.report(result.strategy, result.wallets),
        }
        with self.db.transaction() as session:
            previous = read_state(session, WATCHER_STATUS) or {}
            self.log_error_transition(session, previous.get("last_error"), status["last_error"])
            write_state(session, WATCHER_STATUS, status)
            announced = self.upstream_transitions.observe(session, status["upstreams"], time.monotonic())
        if announced and self.on_events is not None:
            self.on_events()
        self.summary.log(result)

    @staticmethod
    def log_error_transition(session: Session, before: str | None, now: str | None) -> None:
        """Audit-log upstream trouble when it starts, changes or ends, not on every cycle."""
        if now and now != before:
            log_event(session, None, "watcher_error", f"watcher cycle incomplete: {now}")
        elif before and not now:
            log_event(session, None, "watcher_recovered", "watcher cycle complete again after errors")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="watcher.py",
        description="Run the watcher and a webhook dispatcher as their own process, until SIGTERM or Ctrl-C. "
                    "Configured like the app, from the environment and .env (README, Configuration); run it beside "
                    "an app started with WATCHER_ENABLED=false.",
        epilog="Exit status: 0 when stopped, 1 when the database cannot be reached, 2 on a bad setting or usage.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parse_args(argv)
    interrupt_on_sigterm()
    try:
        config = startup_config()
        try:
            db = with_notifications(open_ledger(resolve_database_url(config.database_url), config.public_base_url),
                                    config)
            migrate.upgrade_to_head(db.url)
        except (DatabaseError, Exception) as exc:  # noqa: B014 - one clear line for any start failure
            print(f"database error: {first_line(exc)}", file=sys.stderr)
            return 1
        run_worker(db, config)  # installs its own stop handlers: from there a stop signal ends the loop
    except KeyboardInterrupt:  # stopped while starting
        return 130
    return 0


def metrics_server(config: Config) -> instruments.MetricsServer | None:
    """This process's /metrics when WATCHER_METRICS_PORT is set; a port that cannot be bound stops the start."""
    if config.watcher_metrics_port is None:
        return None
    try:
        return instruments.MetricsServer(config.host, config.watcher_metrics_port, config.metrics_token).start()
    except OSError as exc:
        print(f"WATCHER_METRICS_PORT: cannot serve on {config.host}:{config.watcher_metrics_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_worker(db: Database, config: Config, *, watcher_class: type[Watcher] = Watcher,
               dispatch_db: Database | None = None) -> None:
    """The standalone worker until SIGTERM/SIGINT: the watcher loop, a webhook dispatcher and a notification
    dispatcher (claims are shared safely with any app process) woken as soon as a cycle has written events; with
    WATCHER_METRICS_PORT, this process's /metrics on HOST at that port."""
    config, node = with_sandbox_upstream(db, config)
    server = metrics_server(config)
    dispatcher = WebhookDispatcher(dispatch_db or db, config, private_callbacks=private_callbacks(config))
    dispatcher.start()
    notifier = NotificationDispatcher(dispatch_db or db, config)
    notifier.start()
    refresher = start_refresher(db, config)  # fiat quotes: shared with the app's processes, one fetch at a time

    def wake_dispatchers() -> None:
        dispatcher.notify()
        notifier.notify()

    watcher = watcher_class(db, config, on_events=wake_dispatchers)
    signal.signal(signal.SIGTERM, lambda *_: watcher.request_stop())
    signal.signal(signal.SIGINT, lambda *_: watcher.request_stop())
    watcher.run_forever()
    watcher.stop()  # its loop ran here, not in a thread: this releases the lock
    dispatcher.stop(10)
    notifier.stop(10)
    if refresher is not None:
        refresher.stop()
    if node is not None:
        node.stop()
    if server is not None:
        server.stop()


if __name__ == "__main__":
    import watcher  # this module under its own name, so its log lines say "watcher", not "__main__"

    sys.exit(watcher.main())
