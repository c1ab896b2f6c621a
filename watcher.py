"""The watcher: finds confirmed USDT transfers to watched wallets and credits payments.

Two strategies share everything after the transfers are found (matching.credit_transfer):

* account: one TRC20 history listing per watched wallet (TronGrid's /v1 API), paging with
  the fingerprint to the end, from a persisted per-wallet cursor with an overlap;
* blocks: every solidified block's receipts (gettransactioninfobyblocknum) from a persisted
  block cursor; its cost does not grow with the number of wallets, and it works on java-tron.

One watcher is active across all processes and hosts: the holder of a PostgreSQL advisory lock
taken on a dedicated connection (outside the pool, with TCP keepalives).
`python watcher.py` runs it standalone; the app starts it as a thread when WATCHER_ENABLED.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from config import Config, first_line, startup_config
from database import Database, DatabaseError, resolve_database_url
from matching import (
    ObservedTransfer,
    Outcome,
    credit_transfer,
    expire_due,
    ms_to_datetime,
    timing,
    wallet_payments,
    would_credit,
)
from models import Payment, PaymentStatus, ServiceState, Transfer, WalletCursor
from payments import log_event, may_take_money
from tron_client import Trc20Transfer, TronClient, TronError, TronRateLimited, TxInfo

logger = logging.getLogger(__name__)

WATCHER_LOCK_ID = 0x7472_6F6E_0003
OVERLAP_MS = 60_000  # re-read the last minute: page and clock boundaries never drop a transfer
BLOCK_MS = 3_000
SWITCH_TO_BLOCKS = 0.7  # share of the per-cycle request budget at which `auto` leaves `account`
SWITCH_TO_ACCOUNT = 0.4  # ... and comes back (hysteresis)
LAST_CHECKED_LAG_MS = 60_000  # payments.last_checked_timestamp may trail the wallet cursor by this much
LAST_CHECKED_BATCH = 10_000  # ... plus the cycles needed to refresh every pending payment this many at a time


@dataclass
class CycleResult:
    strategy: str
    wallets: int = 0
    transfers_seen: int = 0
    credited: int = 0
    unmatched: int = 0
    duplicates: int = 0
    expired: int = 0
    requests: int = 0
    blocks: int = 0
    seconds: float = 0.0
    read_up_to: int | None = None  # chain time (ms) up to which every watched wallet was read
    head_timestamp: int | None = None  # the solidified head's time when the cycle started
    blocks_behind: int | None = None
    errors: list[str] = field(default_factory=list)

    def count(self, outcome: Outcome) -> None:
        self.transfers_seen += 1
        if outcome.result == "credited":
            self.credited += 1
        elif outcome.result == "unmatched":
            self.unmatched += 1
        elif outcome.result == "duplicate":
            self.duplicates += 1


# --- shared state in the database --------------------------------------------------------------

def read_state(session: Session, key: str) -> Any:
    row = session.get(ServiceState, key)
    return row.value if row else None


def write_state(session: Session, key: str, value: Any) -> None:
    session.execute(
        insert(ServiceState).values(key=key, value=value)
        .on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": func.now()})
    )


def watched_wallets(session: Session, late_window: int, created_since: datetime | None = None) -> dict[str, datetime]:
    """Wallets with candidates, each with the creation time of its oldest candidate.

    With `created_since`, only candidates created since then count (a cheap refresh through the
    created_at index: the blocks strategy merges it into the list it read at the start of the cycle)."""
    # The late window runs in chain time: up to where each wallet has been read (a wallet never read
    # is watched whatever the wall clock says), so a watcher that is behind loses no late money.
    window = timedelta(seconds=late_window)
    read_to = func.to_timestamp(WalletCursor.last_checked_timestamp / 1000.0)
    unread = WalletCursor.last_checked_timestamp.is_(None)
    query = (
        select(Payment.wallet_address, func.min(Payment.created_at))
        .outerjoin(WalletCursor, WalletCursor.wallet_address == Payment.wallet_address)
        .where(may_take_money(lambda closed: unread | (closed + window >= read_to)))
        .group_by(Payment.wallet_address)
    )
    if created_since is not None:
        query = query.where(Payment.created_at >= created_since)
    return {wallet: oldest for wallet, oldest in session.execute(query)}


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def read_from(cursor: int | None, oldest_candidate: datetime) -> int:
    """Where to (re)start reading a wallet: its cursor, but never before its oldest candidate was
    created (earlier money cannot go to any of them: an address reused after a month is not read
    back a month), minus the overlap."""
    return max(cursor or 0, to_ms(oldest_candidate)) - OVERLAP_MS


# --- the leader lock ---------------------------------------------------------------------------

class LeaderLock:
    """A session-level advisory lock on its own connection; lost when the connection dies."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn: Any = None
        self.held = False

    def _connect(self) -> Any:
        # keepalives: a vanished host is noticed within 10 + 5 * 3 = 25 s and its lock released.
        # The server side must notice too, since it is the server that releases the lock:
        # the same keepalive settings for this session's backend.
        conn = psycopg2.connect(self.dsn, keepalives=1, keepalives_idle=10, keepalives_interval=5,
                                keepalives_count=3, connect_timeout=10,
                                application_name=f"tron-usdt-watcher:{os.getpid()}",
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
            return self.held
        except psycopg2.Error as exc:
            logger.warning("watcher lock: database unreachable: %s", exc)
            self.release()
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn, self.held = None, False


# --- the watcher -------------------------------------------------------------------------------

class Watcher:
    def __init__(self, db: Database, config: Config, client: TronClient | None = None, *,
                 on_events: Callable[[], None] | None = None) -> None:
        """`on_events` is called after a cycle that may have written webhook events (the dispatcher's
        `notify`), so they go out at once instead of at the dispatcher's next poll."""
        self.db = db
        self.config = config
        self.on_events = on_events
        self.client = client or TronClient(
            config.trongrid_api_url, config.usdt_contract, api_key=config.trongrid_api_key,
            max_rps=config.trongrid_max_rps,
        )
        self.lock = LeaderLock(db.url)
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.is_leader = False
        self.strategy: str | None = None
        self.last_result: CycleResult | None = None
        self.cycle_started_requests = 0
        self.rejected: set[str] = set()

    # lifecycle
    def start(self) -> None:
        if self.thread is not None:
            return
        self.thread = threading.Thread(target=self.run_forever, name="watcher", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None
        self.lock.release()

    def run_forever(self) -> None:
        logger.info("watcher started (strategy %s, every %.2fs)", self.config.watcher_strategy,
                    self.config.polling_interval_seconds)
        while True:
            try:
                self.run_once()
            except Exception:  # one bad cycle must never stop the loop
                logger.exception("watcher cycle failed")
            if self.stop_event.wait(self.config.polling_interval_seconds):
                break
        logger.info("watcher stopped")

    def run_once(self) -> CycleResult | None:
        """One cycle if this process holds the leader lock; None otherwise."""
        held = self.lock.acquire()
        if held != self.is_leader:
            logger.info("watcher %s the leader lock", "took" if held else "does not hold")
            self.is_leader = held
        if not held:
            return None
        started = time.monotonic()
        before = self.cycle_started_requests = self.client.request_count
        try:
            result = self.cycle()
        except TronError as exc:  # upstream down or pausing us: nothing read, cursors unchanged
            logger.warning("watcher cycle: upstream unavailable: %s", exc)
            result = CycleResult(self.strategy or self.config.watcher_strategy, errors=[str(exc)])
        result.requests = self.client.request_count - before
        result.seconds = time.monotonic() - started
        self.last_result = result
        self.report(result)
        if self.on_events is not None and (result.transfers_seen or result.expired):
            self.on_events()
        return result

    # strategy choice
    def budget_per_cycle(self) -> float:
        return self.config.trongrid_max_rps * self.config.polling_interval_seconds

    def choose_strategy(self, wallet_count: int) -> str:
        configured = self.config.watcher_strategy
        if configured != "auto":
            return configured
        if not self.client.has_v1_api():
            return "blocks"
        budget = self.budget_per_cycle()
        current = self.strategy or "account"
        if current == "account" and wallet_count > SWITCH_TO_BLOCKS * budget:
            current = "blocks"
        elif current == "blocks" and wallet_count < SWITCH_TO_ACCOUNT * budget:
            current = "account"
        return current

    def cycle(self) -> CycleResult:
        with self.db.Session() as session:
            listed_at = to_ms(session.scalar(select(func.now())))  # the database's clock, as created_at's
            wallets = watched_wallets(session, self.config.late_payment_window_seconds)
            previous = read_state(session, "watcher_strategy")
        if previous:  # another process may have led, and switched, since this one last did
            self.strategy = previous.get("strategy")
        if not wallets and self.strategy != "blocks" and self.config.watcher_strategy != "blocks":
            return CycleResult(self.strategy or "account")  # nothing to watch: no upstream call at all
        strategy = self.choose_strategy(len(wallets))
        if strategy != self.strategy:
            self.switch(self.strategy, strategy, wallets)
        if strategy == "blocks":
            return self.blocks_cycle(wallets, listed_at)
        return self.account_cycle(wallets)

    def switch(self, old: str | None, new: str, wallets: dict[str, datetime]) -> None:
        logger.info("watcher strategy: %s -> %s (%d wallets with candidates, budget %.0f requests per cycle)",
                    old or "none", new, len(wallets), self.budget_per_cycle())
        with self.db.transaction() as session:
            if new == "blocks":
                self.seed_block_cursor(session, wallets)
            elif old == "blocks":
                self.seed_wallet_cursors(session, wallets)
            write_state(session, "watcher_strategy", {"strategy": new, "since": time.time()})
        self.strategy = new

    def seed_block_cursor(self, session: Session, wallets: dict[str, datetime]) -> None:
        """Start reading blocks where the oldest wallet cursor stands, so a switch leaves no gap."""
        if not wallets:
            return
        cursors = dict(session.execute(
            select(WalletCursor.wallet_address, WalletCursor.last_checked_timestamp)
            .where(WalletCursor.wallet_address.in_(list(wallets)))
        ).all())
        oldest = min(read_from(cursors.get(w), created) for w, created in wallets.items())
        head = self.client.get_solid_head()
        # Missed slots only make real blocks fewer than this estimate: it errs towards older blocks.
        number = max(0, head.number - max(0, head.timestamp - oldest) // BLOCK_MS - 20)
        write_state(session, "block_cursor", {"number": number, "timestamp": oldest})

    def seed_wallet_cursors(self, session: Session, wallets: dict[str, datetime]) -> None:
        block = read_state(session, "block_cursor")
        if block is None or not wallets:
            return
        self.save_wallet_cursors(session, list(wallets), int(block["timestamp"]), only_lower=True)

    def save_wallet_cursor(self, session: Session, wallet: str, value: int, *, only_lower: bool = False) -> None:
        self.save_wallet_cursors(session, [wallet], value, only_lower=only_lower)

    def save_wallet_cursors(self, session: Session, wallets: list[str], value: int, *,
                            only_lower: bool = False) -> None:
        """Move the cursors of `wallets` to `value` (never backwards, or never forwards with only_lower):
        one statement however many wallets (the blocks strategy moves every watched wallet each cycle)."""
        if not wallets:
            return
        pick = "LEAST" if only_lower else "GREATEST"
        session.execute(text(
            "INSERT INTO wallet_cursors (wallet_address, last_checked_timestamp) "
            "SELECT w, :value FROM unnest(CAST(:wallets AS varchar[])) AS w "
            "ON CONFLICT (wallet_address) DO UPDATE SET "
            f"last_checked_timestamp = {pick}(wallet_cursors.last_checked_timestamp, EXCLUDED.last_checked_timestamp), "
            "updated_at = now()"
        ), {"value": int(value), "wallets": sorted(set(wallets))})

    # shared: credit and expire
    def credit(self, transfers: list[ObservedTransfer], result: CycleResult) -> None:
        """Credit in chain order (the rules of §4 depend on which transfer comes first), one database
        transaction per chain transaction: the account strategy takes a stored hash as fully read."""
        late = self.config.late_payment_window_seconds
        for _, group in itertools.groupby(transfers, key=lambda t: t.transaction_hash):
            with self.db.transaction() as session:
                for transfer in group:
                    result.count(credit_transfer(session, transfer, late))

    def expire(self, wallets: list[str] | None, read_up_to: int, result: CycleResult) -> None:
        with self.db.transaction() as session:
            result.expired += len(expire_due(session, wallets, read_up_to))
            # Informational copy of the wallet cursor on each pending payment: rewritten only once it is
            # LAST_CHECKED_LAG_MS behind, and at most LAST_CHECKED_BATCH rows per cycle, so a cycle never
            # rewrites every pending row (100,000 rows, seconds of database time); wallet_cursors holds
            # the exact value.
            stale = select(Payment.id).where(
                Payment.status == PaymentStatus.pending,
                or_(Payment.last_checked_timestamp.is_(None),
                    Payment.last_checked_timestamp < read_up_to - LAST_CHECKED_LAG_MS),
            ).limit(LAST_CHECKED_BATCH)
            if wallets is not None:
                stale = stale.where(Payment.wallet_address.in_(wallets))
            session.execute(update(Payment).where(Payment.id.in_(stale))
                            .values(last_checked_timestamp=read_up_to))

    def log_rejected(self, info: TxInfo, wallet: str) -> None:
        with self.db.transaction() as session:
            for payment_id in session.scalars(
                select(Payment.id).where(Payment.wallet_address == wallet, Payment.status == PaymentStatus.pending)
            ):
                log_event(session, payment_id, "transfer_rejected",
                          f"transaction {info.transaction_hash} to this wallet failed on chain (not SUCCESS); "
                          "nothing credited", transaction_hash=info.transaction_hash)

    # account strategy
    def account_cycle(self, wallets: dict[str, datetime]) -> CycleResult:
        result = CycleResult("account", wallets=len(wallets))
        if not wallets:
            return result
        head = self.client.get_solid_head()
        with self.db.Session() as session:
            cursors = dict(session.execute(select(WalletCursor.wallet_address, WalletCursor.last_checked_timestamp)
                                           .where(WalletCursor.wallet_address.in_(list(wallets)))).all())
        result.head_timestamp = head.timestamp
        read_times = []
        for wallet, oldest in wallets.items():
            if self.stop_event.is_set():
                break
            start = read_from(cursors.get(wallet), oldest)
            try:
                read_up_to = self.read_wallet(wallet, start, head.timestamp, result)
            except TronRateLimited as exc:
                result.errors.append(f"{wallet}: rate limited ({exc})")
                break  # the client pauses every call; the next cycle resumes from the cursors
            except TronError as exc:
                logger.warning("watcher: wallet %s skipped this cycle: %s", wallet, exc)
                result.errors.append(f"{wallet}: {exc}")
                continue
            with self.db.transaction() as session:
                self.save_wallet_cursor(session, wallet, read_up_to)
            read_times.append(read_up_to)
            # TronGrid's /v1 index may trail the solidified head it reported a little: expire only
            # what lies an overlap behind, which the next listing reads again anyway.
            self.expire([wallet], read_up_to - OVERLAP_MS, result)
        if len(read_times) == len(wallets):
            result.read_up_to = min(read_times)
        return result

    def read_wallet(self, wallet: str, start: int, solid_ts: int, result: CycleResult) -> int:
        """Credit what the wallet received since `start`; returns the chain time read completely."""
        records = [r for r in self.client.list_trc20_transfers(wallet, max(0, start))
                   if r.block_timestamp <= solid_ts]
        by_tx: dict[str, list[Trc20Transfer]] = {}
        for record in records:
            if record.transaction_id not in self.rejected:
                by_tx.setdefault(record.transaction_id, []).append(record)
        if not by_tx:
            return solid_ts
        with self.db.Session() as session:
            known = set(session.scalars(select(Transfer.transaction_hash).where(
                Transfer.to_address == wallet, Transfer.transaction_hash.in_(list(by_tx)))))
            payments = wallet_payments(session, wallet)
        late = self.config.late_payment_window_seconds
        read_up_to = solid_ts
        for tx_id, group in by_tx.items():
            if tx_id in known:
                continue
            candidates = [p for p in payments if timing(p, ms_to_datetime(group[0].block_timestamp), late)]
            if not candidates:
                continue  # mined before every open payment of the wallet: no receipt needed
            # Receipts for money that would credit a payment always; for money that would stay
            # unmatched only while this cycle's request budget lasts, so a busy wallet cannot starve
            # the others. The wallet then stops here and goes on next cycle: transfers are taken in
            # chain order, because the rules of §4 depend on which came first.
            if not would_credit(candidates, group) and self.cycle_requests() >= self.budget_per_cycle():
                read_up_to = min(read_up_to, group[0].block_timestamp - 1)
                break
            info = self.client.get_transaction_info(tx_id)
            if info is None:  # not solidified on this node yet: read again from here next cycle
                read_up_to = min(read_up_to, group[0].block_timestamp - 1)
                break
            if not info.success:
                self.log_rejected(info, wallet)
                self.remember_rejected(tx_id)
                continue
            self.credit([observed(log) for log in info.transfers if log.to_address == wallet], result)
        return read_up_to

    def remember_rejected(self, tx_id: str) -> None:
        """A failed transaction stays failed: the overlap re-lists it, but it is fetched and logged once."""
        if len(self.rejected) >= 10_000:
            self.rejected.clear()
        self.rejected.add(tx_id)

    def cycle_requests(self) -> int:
        return self.client.request_count - self.cycle_started_requests

    # blocks strategy
    def blocks_cycle(self, wallets: dict[str, datetime], listed_at: int) -> CycleResult:
        result = CycleResult("blocks", wallets=len(wallets))
        head = self.client.get_solid_head()
        with self.db.Session() as session:
            cursor = read_state(session, "block_cursor")
        if cursor is None:
            cursor = {"number": head.number, "timestamp": head.timestamp}
            with self.db.transaction() as session:
                write_state(session, "block_cursor", cursor)
        number, read_ts = int(cursor["number"]), int(cursor["timestamp"])
        budget = max(1, int(self.budget_per_cycle()) - 1)
        last = min(head.number, number + budget)
        snapshot_ms = listed_at
        try:
            for num in range(number + 1, last + 1):
                if self.stop_event.is_set():
                    break
                infos = self.client.get_block_infos(num)
                if any(i.block_timestamp >= snapshot_ms - OVERLAP_MS for i in infos):
                    # A block this recent may pay a payment created after the wallet list was read:
                    # add the wallets of payments created since (with the same overlap for slow commits).
                    since = datetime.fromtimestamp((snapshot_ms - OVERLAP_MS) / 1000, tz=UTC)
                    with self.db.Session() as session:
                        snapshot_ms = to_ms(session.scalar(select(func.now())))
                        recent = watched_wallets(session, self.config.late_payment_window_seconds, since)
                    wallets = {**recent, **wallets}
                transfers = [observed(log) for info in infos if info.success
                             for log in info.transfers if log.to_address in wallets]
                self.credit(transfers, result)
                read_ts = head.timestamp if num == head.number else max([read_ts] + [i.block_timestamp for i in infos])
                number = num
                result.blocks += 1
                with self.db.transaction() as session:
                    write_state(session, "block_cursor", {"number": number, "timestamp": read_ts})
        except TronError as exc:
            logger.warning("watcher: block %d not read this cycle: %s", number + 1, exc)
            result.errors.append(str(exc))
        if number >= head.number:
            read_ts = max(read_ts, head.timestamp)
        result.blocks_behind = head.number - number
        result.read_up_to = read_ts
        result.head_timestamp = head.timestamp
        self.expire(None, read_ts, result)
        with self.db.transaction() as session:
            self.save_wallet_cursors(session, list(wallets), read_ts)
        return result

    # reporting
    def report(self, result: CycleResult) -> None:
        behind = None
        if result.read_up_to is not None and result.head_timestamp is not None:
            behind = max(0.0, (result.head_timestamp - result.read_up_to) / 1000)
        elif not result.wallets and not result.errors:
            behind = 0.0  # nothing to watch: nothing to be behind on
        status = {
            "strategy": result.strategy,
            "last_cycle_finished": time.time(),
            "last_cycle_seconds": round(result.seconds, 3),
            "seconds_behind": behind,
            "blocks_behind": result.blocks_behind,
            "paused_until": self.client.paused_until,
            "wallets": result.wallets,
            "requests": result.requests,
            "last_error": result.errors[-1] if result.errors else None,
            "errors": len(result.errors),
        }
        with self.db.transaction() as session:
            previous = read_state(session, "watcher_status") or {}
            self.log_error_transition(session, previous.get("last_error"), status["last_error"])
            write_state(session, "watcher_status", status)
        logger.info("watcher cycle: %s, %d wallets, %d transfers (%d credited, %d unmatched), %d expired, "
                    "%d requests, %.2fs", result.strategy, result.wallets, result.transfers_seen, result.credited,
                    result.unmatched, result.expired, result.requests, result.seconds)


    @staticmethod
    def log_error_transition(session: Session, before: str | None, now: str | None) -> None:
        """Audit-log upstream trouble when it starts, changes or ends, not on every cycle."""
        if now and now != before:
            log_event(session, None, "watcher_error", f"watcher cycle incomplete: {now}")
        elif before and not now:
            log_event(session, None, "watcher_recovered", "watcher cycle complete again after errors")


def observed(log: Any) -> ObservedTransfer:
    return ObservedTransfer(log.transaction_hash, log.log_index, log.from_address, log.to_address, log.amount,
                            log.block_number, log.block_timestamp)


def main() -> int:
    config = startup_config()
    try:
        db = Database(resolve_database_url(config.database_url))
        import migrate

        migrate.upgrade_to_head(db.url)
    except (DatabaseError, Exception) as exc:  # noqa: B014 - one clear line for any start failure
        print(f"database error: {first_line(exc)}", file=sys.stderr)
        return 1
    run_worker(db, config)
    return 0


def run_worker(db: Database, config: Config, *, watcher_class: type[Watcher] = Watcher,
               dispatch_db: Database | None = None) -> None:
    """The standalone worker until SIGTERM/SIGINT: the watcher loop, and a webhook dispatcher (claims
    are shared safely with any app process) woken as soon as a cycle has written events."""
    from webhooks import WebhookDispatcher

    dispatcher = WebhookDispatcher(dispatch_db or db, config)
    dispatcher.start()
    watcher = watcher_class(db, config, on_events=dispatcher.notify)
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: watcher.stop_event.set())
    watcher.run_forever()
    watcher.lock.release()
    dispatcher.stop(10)


if __name__ == "__main__":
    sys.exit(main())
