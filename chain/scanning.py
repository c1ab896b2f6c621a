"""The watcher's two ways of reading the chain; both hand what they find to matching.credit_transfer.

* :class:`AccountScan` lists each watched wallet's confirmed USDT transfers on TronGrid's ``/v1`` index, from a
  per-wallet cursor, and fetches receipts only for transfers that could credit a payment. The index may lag: the
  cursors and chain-time expiry advance at most to the index's watermark (the newest confirmed USDT event it
  lists), never to the solid head alone.
* :class:`BlockScan` reads every solidified block's receipts from a persisted block cursor. A block is used only
  when its answer is known complete: ``[]`` is an empty block only if ``getblockbynum`` shows no transaction;
  otherwise it is "not yet" (a node behind the others) and is asked again, never skipped.

Both work in chain order (the matching rules depend on which transfer came first), one database transaction per
chain transaction.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import or_, select, update

from chain.answers import Trc20Transfer, TronBadResponse, TronError, TronRateLimited, TxInfo, public_error
from chain.chain_view import OVERLAP_MS, ChainView, read_from
from database import Database
from infra import instruments
from infra.config import Config
from infra.times import db_now, ms_to_datetime, to_ms
from ledger.events import log_event
from ledger.matching import (
    Outcome,
    credit_transfer,
    expire_due,
    is_watched_at,
    record_rejected,
    record_set_aside,
    would_credit,
)
from ledger.records import RejectedLog, TransferLog
from models import FOUND_BY_SCAN, Payment, PaymentStatus, Transfer
from tron_client import TronClient

if TYPE_CHECKING:
    from chain.head import HeadWatch

logger = logging.getLogger(__name__)
T = TypeVar("T")

LAST_CHECKED_LAG_MS = 60_000  # payments.last_checked_timestamp may trail the wallet cursor by this much
EXPIRE_BATCH = 10_000  # payments expired in one cycle at most (each writes its audit row and event)
LAST_CHECKED_BATCH = 10_000  # ... plus the cycles needed to refresh every pending payment this many at a time
NOT_YET_TRIES = 3  # a "not yet" answer is asked again this often in a cycle (a pool answers from another node)
RECONCILE_SHARE = 0.2  # the part of the request budget the reconciliation may take
SET_ASIDE_BLOCKS = "set_aside_blocks"  # chain state: blocks whose receipts stayed unreadable, asked for again


@dataclass
class CycleResult:
    strategy: str
    wallets: int = 0
    transfers_seen: int = 0
    credited: int = 0
    unmatched: int = 0
    duplicates: int = 0
    rejected: int = 0
    expired: int = 0
    reconciled: int = 0  # transfers the reconciliation found that the scan had missed
    requests: int = 0  # every upstream request of the cycle, the sweep's included
    sweep_requests: int = 0  # the reconciliation's share of them
    swept: int = 0  # wallets (or blocks) the reconciliation re-read this cycle
    passes: int = 0  # reconciliation passes completed this cycle
    blocks: int = 0
    seconds: float = 0.0
    read_up_to: int | None = None  # chain time (ms) up to which every watched wallet was read
    head_timestamp: int | None = None  # the accepted solid head's time
    head_accepted_at: float | None = None  # when this machine accepted it (unix seconds)
    blocks_behind: int | None = None
    detected_unconfirmed: int = 0  # transfers seen above the solid head and announced (payment.detected)
    set_aside: int = 0  # records or blocks set aside this cycle as unreadable
    errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # upstream answers not believed this cycle

    def detected(self, block_timestamp: int) -> None:
        """A transfer of this block was just credited: the detection latency (metrics)."""
        if self.head_timestamp is not None and self.head_accepted_at is not None:
            instruments.detection_latency(block_timestamp, self.head_timestamp, self.head_accepted_at)

    def count(self, outcome: Outcome) -> None:
        self.transfers_seen += 1
        if outcome.result == "credited":
            self.credited += 1
        elif outcome.result == "unmatched":
            self.unmatched += 1
        elif outcome.result == "duplicate":
            self.duplicates += 1
        elif outcome.result == "rejected":
            self.rejected += 1


class Stalls:
    """How long each held position (a wallet's cursor, the block cursor) has been held by something unreadable in
    this process. Once held for `wait_seconds`, what holds it is set aside rather than waited for (contract §4), and
    so is anything else unreadable met before the position moves on again: k unreadable items cost one bounded
    wait, not k of them."""

    def __init__(self, wait_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_seconds, self.clock = wait_seconds, clock
        self.since: dict[str, float] = {}

    def overdue(self, key: str) -> bool:
        """Note that `key` is unreadable now; True once it has been so for the whole bounded wait."""
        if key not in self.since and len(self.since) >= 100_000:
            self.since.pop(next(iter(self.since)))  # the oldest held position, not every timer
        first = self.since.setdefault(key, self.clock())
        return self.clock() - first >= self.wait_seconds

    def readable(self, key: str) -> None:
        self.since.pop(key, None)


class Scan:
    """What the strategies share: crediting in chain order, expiry, the request budget, "not yet" retries."""

    name = ""

    def __init__(self, db: Database, config: Config, client: TronClient, view: ChainView,
                 stop: threading.Event, failed_txs: set[str], *, share: float = 1.0, stalls: Stalls | None = None
                 ) -> None:
        """`failed_txs`: failed transactions already fetched and logged, shared by every reader of a watcher (the
        overlap and the reconciliation list them again). `share`: the part of an upstream's requests per interval
        this reader may use. `stalls`: how long what is unreadable has been so (shared by a watcher's readers)."""
        self.db, self.config, self.client, self.view, self.stop = db, config, client, view, stop
        self.share = share
        self.failed_txs = failed_txs
        self.stalls = stalls or Stalls(config.unreadable_wait_seconds)
        self.cycle_started_requests = 0
        self.allowance = 0.0
        self.next_first: str | None = None  # the wallet a cycle that had to stop part-way did not reach

    def start_cycle(self) -> None:
        """A new cycle's allowance: one budget, less what the last cycle spent beyond its own (a listing of several
        pages or a receipt can overshoot), so that on average a reader never uses more than its budget."""
        spent = self.client.request_count - self.cycle_started_requests
        self.allowance = min(self.budget(), self.allowance - spent + self.budget())
        self.cycle_started_requests = self.client.request_count

    budget_cap: float | None = None  # what the day's quota leaves this reader a cycle (chain/quota.py), if less

    def budget(self) -> float:
        """Requests this reader may send per cycle: its share of one upstream's rate over one interval (at least one,
        unless the day's quota leaves it less: then less, which over the cycles averages to what it leaves)."""
        budget = max(1, int(self.share * self.config.trongrid_max_rps * self.config.polling_interval_seconds))
        return budget if self.budget_cap is None else min(budget, self.budget_cap)

    def cycle_requests(self) -> int:
        return self.client.request_count - self.cycle_started_requests

    def spent(self) -> bool:
        """This cycle's allowance is used up."""
        return self.cycle_requests() >= self.allowance

    def ask(self, question: Callable[[TronClient], T | None]) -> T | None:
        """Ask `question` of the upstreams in turn until one answers (not None). A "not yet" (None) is asked again,
        of the next upstream when there are several, NOT_YET_TRIES times at least and every upstream once; an
        upstream that fails hands over to the next. None when every answer was "not yet"; the first failure is
        raised when no upstream answered at all."""
        upstreams = self.client.ordered_upstreams()
        failure: TronError | None = None
        answered = False
        for attempt in range(max(NOT_YET_TRIES, len(upstreams))):
            try:
                answer = question(self.client.only(upstreams[attempt % len(upstreams)]))
            except TronError as exc:
                failure = failure or exc
                continue
            answered = True
            if answer is not None:
                return answer
        if not answered and failure is not None:
            raise failure
        return None

    def credit(self, transfers: list[TransferLog], result: CycleResult, found_by: str = FOUND_BY_SCAN) -> None:
        """Credit in chain order, one database transaction per chain transaction: the account strategy takes a
        stored hash as fully read."""
        late = self.config.late_payment_window_seconds
        for _, group in itertools.groupby(transfers, key=lambda t: t.transaction_hash):
            with self.db.transaction() as session:
                outcomes = [credit_transfer(session, transfer, late, found_by, self.config.merchant_webhook_url)
                            for transfer in group]
            for outcome in outcomes:
                result.count(outcome)
                if outcome.result == "credited" and found_by == FOUND_BY_SCAN:
                    result.detected(outcome.transfer.block_timestamp)
                if found_by != FOUND_BY_SCAN and outcome.result in ("credited", "unmatched"):
                    result.reconciled += 1
                    logger.info("transfer %s:%d found by %s (%s)", outcome.transfer.transaction_hash,
                                outcome.transfer.log_index, found_by, outcome.result)

    def reject(self, logs: list[RejectedLog], result: CycleResult) -> None:
        if not logs:
            return
        with self.db.transaction() as session:
            for log in logs:
                if record_rejected(session, log):
                    logger.warning("transfer %s:%d rejected: %s", log.transaction_hash, log.log_index, log.reason)
                    result.rejected += 1

    def take(self, info: TxInfo, wallets: set[str] | dict[str, datetime], result: CycleResult,
             found_by: str = FOUND_BY_SCAN) -> None:
        """Credit a successful transaction's USDT transfers to watched wallets; record its unreadable ones."""
        self.reject([r for r in info.rejected if r.to_address is None or r.to_address in wallets], result)
        self.credit([log for log in info.transfers if log.to_address in wallets], result, found_by)

    def expire(self, wallets: list[str] | None, read_up_to: int, result: CycleResult) -> None:
        with self.db.transaction() as session:
            # at most EXPIRE_BATCH a cycle: a million payments expiring at once take some cycles, not one endless one
            result.expired += len(expire_due(session, wallets, read_up_to, limit=EXPIRE_BATCH))
            if wallets is None:
                return  # the blocks strategy: its block cursor says how far every payment's wallet was read
            # Informational copy of the wallet cursor on each pending payment of the wallets read: rewritten only
            # once it is LAST_CHECKED_LAG_MS behind, and at most LAST_CHECKED_BATCH rows per cycle, so a cycle never
            # rewrites every pending row; wallet_cursors holds the exact value.
            stale = select(Payment.id).where(
                Payment.status == PaymentStatus.pending, Payment.wallet_address.in_(wallets),
                or_(Payment.last_checked_timestamp.is_(None),
                    Payment.last_checked_timestamp < read_up_to - LAST_CHECKED_LAG_MS),
            ).limit(LAST_CHECKED_BATCH)
            session.execute(update(Payment).where(Payment.id.in_(stale)).values(last_checked_timestamp=read_up_to))

    def log_failed_transaction(self, info: TxInfo, wallet: str) -> None:
        """A failed transaction stays failed: the overlap re-lists it, but it is fetched and logged once."""
        if len(self.failed_txs) >= 10_000:
            self.failed_txs.clear()
        self.failed_txs.add(info.transaction_hash)
        with self.db.transaction() as session:  # one row, however many payments the wallet has
            pending = session.scalars(select(Payment.id).where(
                Payment.wallet_address == wallet, Payment.status == PaymentStatus.pending).limit(2)).all()
            log_event(session, pending[0] if len(pending) == 1 else None, "transfer_rejected",
                      f"transaction {info.transaction_hash} to {wallet} failed on chain (not SUCCESS); nothing "
                      "credited", transaction_hash=info.transaction_hash, to_address=wallet)


class AccountScan(Scan):
    """Reads each watched wallet's TRC20 history on the /v1 index, up to the index's watermark."""

    name = "account"

    def run(self, wallets: dict[str, datetime], head_timestamp: int, result: CycleResult) -> None:
        index, watermark = self.index_and_watermark()
        if watermark is None:
            result.errors.append("the event index lists no confirmed USDT transfer: how far it reached is unknown")
            return
        limit = min(head_timestamp, watermark)
        with self.db.Session() as session:
            cursors = self.view.wallet_cursors(session, list(wallets))
        read_times = []
        failures = 0
        for wallet in self.in_turn(wallets):
            if self.stop.is_set():
                break
            try:
                read_up_to = self.read_wallet(wallet, read_from(cursors.get(wallet), wallets[wallet]), limit, result,
                                              index=index)
            except TronRateLimited as exc:
                result.errors.append(f"rate limited ({public_error(exc)})")
                self.next_first = wallet  # that upstream pauses its calls; the next cycle starts here
                break
            except TronError as exc:
                failures += 1
                logger.warning("watcher: wallet %s skipped this cycle: %s", wallet, exc)
                result.errors.append(f"{failures} wallet(s) not read this cycle: {public_error(exc)}")
                continue
            with self.db.transaction() as session:
                self.view.save_wallet_cursors(session, [wallet], read_up_to)
            read_times.append(read_up_to)
            # Expire only what lies an overlap behind the watermark, which the next listing reads again anyway.
            self.expire([wallet], read_up_to - OVERLAP_MS, result)
        if len(read_times) == len(wallets):
            result.read_up_to = min(read_times)

    def read_claimed(self, wallet: str, oldest_candidate: datetime, until: int, result: CycleResult) -> None:
        """Read one wallet now, from its cursor up to chain time `until` (a payer's claimed transaction), as a
        cycle reads it: credited in chain order, its cursor moved on, what is due expired."""
        index, watermark = self.index_and_watermark()
        if watermark is None:
            return
        with self.db.Session() as session:
            cursor = self.view.wallet_cursors(session, [wallet]).get(wallet)
        read_up_to = self.read_wallet(wallet, read_from(cursor, oldest_candidate), min(until, watermark), result,
                                      index=index)
        with self.db.transaction() as session:
            self.view.save_wallet_cursors(session, [wallet], read_up_to)
        self.expire([wallet], read_up_to - OVERLAP_MS, result)

    def index_and_watermark(self) -> tuple[TronClient, int | None]:
        """One /v1 upstream for the whole cycle, with its watermark: a listing is read only up to the watermark of
        the index that gave it (another upstream's index may lag more). The next one when the first fails."""
        failure: TronError | None = None
        for upstream in self.client.ordered_upstreams(need_v1=True):
            index = self.client.only(upstream)
            try:
                return index, index.index_watermark()
            except TronError as exc:
                failure = failure or exc
        raise failure or TronError("no upstream serves TronGrid's /v1 API")

    def in_turn(self, wallets: dict[str, datetime]) -> list[str]:
        """The wallets in address order, starting where the last cycle had to stop (a rate limit part-way), so
        the same wallets are not always the ones left for the next cycle."""
        ordered = sorted(wallets)
        start = next((i for i, w in enumerate(ordered) if w >= (self.next_first or "")), 0)
        self.next_first = None
        return ordered[start:] + ordered[:start]

    def read_wallet(self, wallet: str, start: int, limit: int, result: CycleResult,
                    found_by: str = FOUND_BY_SCAN, index: TronClient | None = None) -> int:
        """Credit what the wallet received from `start` up to `limit` (listed by `index`, by default this reader's
        upstreams); returns the chain time read completely."""
        listing = (index or self.client).list_trc20_transfers(wallet, max(0, start))
        records = [r for r in listing if r.block_timestamp <= limit]
        by_tx: dict[str, list[Trc20Transfer]] = {}
        for record in records:
            if record.transaction_id not in self.failed_txs:
                by_tx.setdefault(record.transaction_id, []).append(record)
        if not by_tx:
            self.stalls.readable(f"wallet:{wallet}")
            return limit
        with self.db.Session() as session:
            known = set(session.scalars(select(Transfer.transaction_hash).where(
                Transfer.to_address == wallet, Transfer.transaction_hash.in_(list(by_tx)))))
        late = self.config.late_payment_window_seconds
        for tx_id, group in by_tx.items():
            if tx_id in known:
                continue
            at = group[0].block_timestamp
            mined = ms_to_datetime(at)
            with self.db.Session() as session:  # a few rows per transaction, however many payments the wallet has
                if not is_watched_at(session, wallet, mined, late):
                    continue  # before every open payment, and no completion watches it: no receipt needed
                # Receipts for money that would credit a payment always; for money that would stay unmatched only
                # while this cycle's request budget lasts, so a busy wallet cannot starve the others. The wallet
                # then stops here and goes on next cycle: transfers are taken in chain order.
                if not would_credit(session, wallet, mined, late, group) and self.spent():
                    return at - 1
            info = self.receipt(tx_id)
            if info is None:  # not solidified on any node asked yet: read again from here next cycle...
                if not self.stalls.overdue(f"wallet:{wallet}"):
                    return at - 1
                self.set_aside(tx_id, wallet, group, result)  # ... unless the wallet has been held the bounded wait
                continue
            if info.block_timestamp > limit:  # a receipt from beyond what the head and index allow: not believed
                logger.warning("receipt of %s refused: its block time %d is past the readable %d", tx_id,
                               info.block_timestamp, limit, extra={"tx": tx_id})
                return at - 1
            if not info.success:
                self.log_failed_transaction(info, wallet)
                continue
            self.take(info, {wallet}, result, found_by)
        self.stalls.readable(f"wallet:{wallet}")  # read to the limit: a later stall waits the whole bound again
        return limit

    def receipt(self, tx_id: str) -> TxInfo | None:
        """The transaction's receipt; ``{}`` (a node behind, or not solidified yet) is asked again a few times."""
        return self.ask(lambda view: view.get_transaction_info(tx_id))

    def set_aside(self, tx_id: str, wallet: str, group: list[Trc20Transfer], result: CycleResult) -> None:
        """A listed transaction whose receipt no upstream gave for the bounded wait: kept as a transfer set aside
        (what the listing said of it), so the wallet's later money is credited; the reconciliation asks again."""
        amounts = [r.amount for r in group]
        amount = None if None in amounts else sum(a for a in amounts if a is not None)
        senders = {r.from_address for r in group}
        with self.db.transaction() as session:
            stored = record_set_aside(session, tx_id, wallet, senders.pop() if len(senders) == 1 else None, amount,
                                      group[0].block_timestamp,
                                      f"no upstream gave its receipt for {self.config.unreadable_wait_seconds:g} s")
        if stored:
            result.set_aside += 1
            instruments.SET_ASIDE.inc()
            logger.warning("transaction %s to a watched wallet set aside: its receipt stayed unreadable for %g s; "
                           "the wallet's later transfers are read on, the reconciliation keeps asking for it",
                           tx_id, self.config.unreadable_wait_seconds, extra={"tx": tx_id})


class BlockScan(Scan):
    """Reads every solidified block's receipts from the block cursor, oldest first, within the budget."""

    name = "blocks"
    head_watch: HeadWatch | None = None  # blocks read above the solid head, whose receipts need no second read

    def run(self, wallets: dict[str, datetime], listed_at: int, head_number: int, head_timestamp: int,
            result: CycleResult) -> None:
        with self.db.Session() as session:
            cursor = self.view.state(session, "block_cursor")
        number, read_ts = int(cursor["number"]), int(cursor["timestamp"])
        snapshot_ms = listed_at
        for num in range(number + 1, head_number + 1):
            if self.stop.is_set() or self.spent():
                break
            try:
                block = self.read_block(num, head_timestamp, wallets)
            except TronError as exc:
                logger.warning("watcher: block %d not read this cycle: %s", num, exc)
                result.errors.append(f"block {num} not read: {public_error(exc)}")
                break
            if block is None:
                if not self.stalls.overdue("block_cursor"):
                    result.errors.append(f"block {num}: no upstream has given its complete receipts yet; asked "
                                         "again next cycle")
                    break
                self.set_aside_block(num, result)  # unreadable for the whole bounded wait: read on past it
                number = num
                with self.db.transaction() as session:
                    self.view.set_state(session, "block_cursor", {"number": number, "timestamp": read_ts})
                continue
            self.stalls.readable("block_cursor")
            timestamp, infos = block
            if timestamp >= snapshot_ms - OVERLAP_MS:
                # A block this recent may pay a payment created after the wallet list was read: add the wallets of
                # payments created since (with the same overlap for slow commits).
                since = ms_to_datetime(snapshot_ms - OVERLAP_MS)
                with self.db.Session() as session:
                    snapshot_ms = to_ms(db_now(session))
                    for wallet, oldest in self.view.watched_wallets(session, since).items():
                        wallets.setdefault(wallet, oldest)  # in place: the cycle's own copy, however large
            for info in infos:
                if info.success:
                    self.take(info, wallets, result)
            number, read_ts = num, max(read_ts, timestamp)
            result.blocks += 1
            with self.db.transaction() as session:
                self.view.set_state(session, "block_cursor", {"number": number, "timestamp": read_ts})
        result.blocks_behind = head_number - number
        result.read_up_to = read_ts
        self.expire(None, read_ts, result)
        # No cursor per wallet is written: every watched wallet has been read up to the block cursor, which
        # ChainView.wallet_cursors and watched_wallets take as every wallet's floor while this strategy reads (a
        # million wallets would otherwise be a million rows rewritten every cycle).

    def read_block(self, num: int, latest: int, wallets: set[str] | dict[str, datetime] | None = None
                   ) -> tuple[int, list[TxInfo]] | None:
        """(timestamp, receipts) of block ``num`` once its answer is known complete; None for "not yet".

        A node either has a block with every receipt or has not reached it, so a non-empty answer is complete;
        ``[]`` is ambiguous and is believed only when ``getblockbynum`` shows the block with no transaction. Its
        time must not pass the accepted head's (`latest`): a block from the future is not believed, whichever
        upstream gave it (it would expire payments early)."""

        kept = self.head_watch.solid_answer(num, wallets) \
            if self.head_watch is not None and wallets is not None else None
        if kept is not None and kept[0] <= latest:
            return kept

        def complete(view: TronClient) -> tuple[int, list[TxInfo]] | None:
            infos = view.get_block_infos(num)
            if infos:
                answer = infos[0].block_timestamp, infos
            else:
                header = view.get_block(num)
                if header is None or header.transaction_count:
                    return None
                answer = header.timestamp, []
            if answer[0] > latest:
                raise TronBadResponse(f"{view.upstreams[0].name}: block {num} refused: its time is after the "
                                      "accepted solid head's")
            return answer

        return self.ask(complete)

    def set_aside_block(self, num: int, result: CycleResult) -> None:
        """Block `num`, whose complete receipts no upstream gave for the bounded wait, is listed as set aside (its
        transfers are not known: no transfer row can stand for them) and asked for again by the reconciliation."""
        with self.db.transaction() as session:
            blocks = self.view.state(session, SET_ASIDE_BLOCKS) or []
            if num not in blocks:
                self.view.set_state(session, SET_ASIDE_BLOCKS, sorted([*blocks, num]))
                log_event(session, None, "block_set_aside",
                          f"block {num} set aside: no upstream gave its complete receipts for "
                          f"{self.config.unreadable_wait_seconds:g} s; the blocks after it are read on, the "
                          "reconciliation keeps asking for it", block_number=num)
        result.set_aside += 1
        instruments.SET_ASIDE.inc()
        logger.warning("block %d set aside: its receipts stayed unreadable for %g s", num,
                       self.config.unreadable_wait_seconds)

    def seed(self, head_number: int, head_timestamp: int, wallets: dict[str, datetime]) -> None:
        """Start reading blocks where the oldest wallet cursor (or oldest candidate) stands, so a start or a
        switch from the account strategy leaves no gap."""
        with self.db.Session() as session:
            cursors = self.view.wallet_cursors(session, list(wallets))
        target = min((read_from(cursors.get(w), c) for w, c in wallets.items()), default=head_timestamp)
        if target >= head_timestamp:
            number, timestamp = head_number, head_timestamp
        else:
            number, timestamp = self.block_before(target, head_number), target
        with self.db.transaction() as session:
            self.view.set_state(session, "block_cursor", {"number": number, "timestamp": timestamp})
        logger.info("block cursor set to block %d (chain time %s)", number, ms_to_datetime(timestamp).isoformat())

    def block_before(self, timestamp: int, head_number: int) -> int:
        """A block mined before chain time `timestamp` (the cursor then reads the blocks after it): found by
        stepping back from the head in doubling steps, then halving the interval. A block no upstream gives
        counts as newer, so every doubt leads to an older block, never to a gap."""

        def older(number: int) -> bool:
            header = self.ask(lambda view: view.get_block(number))  # a node behind the others: the next one
            return header is not None and header.timestamp < timestamp

        newer, step = head_number, 1
        while True:
            candidate = max(0, head_number - step)
            if candidate == 0 or older(candidate):
                break
            newer, step = candidate, step * 2
        while newer - candidate > 1:
            middle = (candidate + newer) // 2
            if older(middle):
                candidate = middle
            else:
                newer = middle
        return candidate
