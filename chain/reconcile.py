"""Reconciliation: a second look that heals what the scan missed.

Round-robin over the wallets that have candidates, the sweep re-reads each one's whole candidate window (from its
oldest candidate's creation up to where the scan has read it) and credits what it finds through the scan's own
code path (``AccountScan.read_wallet``, ``matching.credit_transfer``): a transfer the ``/v1`` index listed later
than the scan's overlap, or that one upstream left out, is credited all the same and recorded as found by
reconciliation. It reads through another upstream than the scan's when several are configured.

Where no upstream offers ``/v1``, it re-reads the blocks of the last interval through another upstream; with a
single java-tron node it is off (the complete-block check already refuses what a node has not reached).

A full pass aims at ``RECONCILE_INTERVAL_SECONDS`` but never takes more than a fifth of the request budget:
with many wallets a pass takes longer, and /health shows the age of the last complete pass.
"""
from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from datetime import datetime
from typing import Any

from chain.answers import TronError, TxInfo, public_error
from chain.chain_view import ChainView, read_from
from chain.scanning import RECONCILE_SHARE, SET_ASIDE_BLOCKS, AccountScan, BlockScan, CycleResult, Stalls
from database import Database
from infra.config import Config
from infra.times import ms_to_datetime
from ledger.events import log_event
from ledger.matching import is_watched_at, resolve_set_aside, set_aside_transactions
from models import FOUND_BY_RECONCILIATION
from tron_client import TronClient

logger = logging.getLogger(__name__)

RETRIES_PER_CYCLE = 5  # set-aside transactions, and set-aside blocks, asked for again each cycle


class Reconciler:
    """Runs a slice of the current pass each cycle; its progress lives in the database (any leader resumes it)."""

    def __init__(self, db: Database, config: Config, client: TronClient, view: ChainView,
                 stop: threading.Event, failed_txs: set[str], *, stalls: Stalls | None = None) -> None:
        self.db, self.config, self.view = db, config, view
        self.client = client.rotated(1)  # another upstream first, when there are several
        self.account = AccountScan(db, config, self.client, view, stop, failed_txs, share=RECONCILE_SHARE,
                                   stalls=stalls)
        self.blocks = BlockScan(db, config, self.client, view, stop, failed_txs, share=RECONCILE_SHARE, stalls=stalls)
        self.last_error: str | None = None
        self.retry_after = 0  # where the round-robin over set-aside transfers goes on
        self.block_retry_after = -1  # ... and over set-aside blocks
        self.order: list[str] = []  # the wallets of the current pass, in address order
        self.order_started: float | None = None  # ... made for the pass started then

    def shares_the_scan_upstream(self) -> bool:
        """Whether the sweep must use the scan's one upstream (then it takes a fifth of that budget)."""
        return len(self.client.upstreams) == 1 and self.mode() is not None

    def mode(self) -> str | None:
        if self.client.has_v1_api():
            return "wallets"
        return "blocks" if len(self.client.upstreams) > 1 else None

    def run(self, wallets: dict[str, datetime], head_timestamp: int, result: CycleResult) -> None:
        self.account.start_cycle()  # once a cycle: the retries and the sweep share one allowance
        self.blocks.start_cycle()
        self.retry_set_aside(wallets, head_timestamp, result)
        mode = self.mode()
        if mode is None:
            return
        with self.db.Session() as session:
            progress = self.view.state(session, "reconcile") or {}
        now = time.time()
        if progress.get("mode") != mode or (progress.get("complete") and
                                            now - progress.get("started_at", 0) >= self.interval()):
            progress = {"mode": mode, "started_at": now, "complete": False, "done": 0,
                        "last_complete_at": progress.get("last_complete_at")}
        if not progress["complete"]:
            try:
                if mode == "wallets":
                    self.sweep_wallets(wallets, progress, now, result)
                else:
                    self.sweep_blocks(wallets, progress, head_timestamp, result)
                self.last_error = None
            except TronError as exc:
                self.last_error = f"reconciliation paused this cycle: {public_error(exc)}"
                logger.warning("reconciliation paused this cycle: %s", exc)
        with self.db.transaction() as session:
            self.view.set_state(session, "reconcile", progress)

    def retry_set_aside(self, wallets: dict[str, datetime], head_timestamp: int, result: CycleResult) -> None:
        """Ask again for some of what was set aside as unreadable, round-robin (RETRIES_PER_CYCLE of each a cycle): a
        transaction's receipt, a block's receipts. What has become readable is credited by the usual rules, as found
        by reconciliation, and leaves the set-aside list; one that fails to answer is asked again in its turn."""
        with self.db.Session() as session:
            pending = set_aside_transactions(session, self.retry_after, RETRIES_PER_CYCLE)
            blocks = self.view.state(session, SET_ASIDE_BLOCKS) or []
        self.retry_after = pending[-1][0] if len(pending) == RETRIES_PER_CYCLE else 0
        for _, tx_hash, wallet in pending:
            if self.account.spent():
                break
            try:
                info = self.account.receipt(tx_hash)
            except TronError as exc:
                logger.warning("set-aside transaction %s not asked for again this cycle: %s", tx_hash, exc)
                continue
            if info is None or info.block_timestamp > head_timestamp:
                continue  # still unreadable (or from beyond the accepted head: not believed)
            if info.success:
                self.account.take(info, {wallet}, result, FOUND_BY_RECONCILIATION)
            else:
                self.account.log_failed_transaction(info, wallet)
            with self.db.transaction() as session:
                resolve_set_aside(session, tx_hash, wallet)
        start = bisect.bisect_right(blocks, self.block_retry_after)
        turn = (blocks[start:] + blocks[:start])[:RETRIES_PER_CYCLE]
        for number in turn:
            if self.blocks.spent():
                break
            self.block_retry_after = number
            try:
                block = self.blocks.read_block(number, head_timestamp)
            except TronError as exc:
                logger.warning("set-aside block %d not asked for again this cycle: %s", number, exc)
                continue
            if block is None:
                continue
            self.take_late_block(block[1], result)
            with self.db.transaction() as session:
                left = [n for n in self.view.state(session, SET_ASIDE_BLOCKS) or [] if n != number]
                self.view.set_state(session, SET_ASIDE_BLOCKS, left)
                log_event(session, None, "set_aside_resolved", f"block {number}, set aside as unreadable, was "
                          "read: its transfers are credited by the usual rules", block_number=number)

    def take_late_block(self, infos: list[TxInfo], result: CycleResult) -> None:
        """Credit a set-aside block read at last: to the wallets watched at its block time (not the wallets watched
        now: a payment whose late window has ended since may still take money mined on time)."""
        late = self.config.late_payment_window_seconds
        for info in infos:
            if not info.success:
                continue
            recipients = {log.to_address for log in info.transfers} | {r.to_address for r in info.rejected
                                                                         if r.to_address is not None}
            with self.db.Session() as session:
                watched = {w for w in recipients
                           if is_watched_at(session, w, ms_to_datetime(info.block_timestamp), late)}
            if watched:
                self.blocks.take(info, watched, result, FOUND_BY_RECONCILIATION)

    def interval(self) -> float:
        return self.config.reconcile_interval_seconds

    def due(self, remaining: int, progress: dict[str, Any], now: float) -> int:
        """How many of the pass's remaining items this cycle takes, so that the pass ends on time: the rest spread
        over the cycles left until RECONCILE_INTERVAL_SECONDS after it started (all of them once that is past)."""
        left = progress["started_at"] + self.interval() - now
        return math.ceil(remaining / max(1.0, left / self.config.polling_interval_seconds))

    def sweep_wallets(self, wallets: dict[str, datetime], progress: dict[str, Any], now: float,
                      result: CycleResult) -> None:
        """The next wallets of the pass in address order (the pass's order is made once, when it starts: a million
        wallets are not sorted again every cycle; a wallet watched since is in the next pass)."""
        if self.order_started != progress["started_at"]:
            self.order, self.order_started = sorted(wallets), progress["started_at"]
        after = progress.get("after")
        todo = self.order[bisect.bisect_right(self.order, after) if after is not None else 0:]
        take = todo[:self.due(len(todo), progress, now)]
        with self.db.Session() as session:
            cursors = self.view.wallet_cursors(session, [w for w in take if w in wallets])
        for wallet in take:
            if self.account.spent():
                return
            cursor = cursors.get(wallet) if wallet in wallets else None  # no longer watched: nothing to read
            if cursor is not None:  # a wallet the scan has not read yet has nothing to look at again
                read = self.account.read_wallet(wallet, read_from(None, wallets[wallet]), cursor, result,
                                                FOUND_BY_RECONCILIATION)
                if read < cursor:
                    return  # out of budget or a receipt not there yet: this wallet again next cycle
            progress["after"], progress["done"] = wallet, progress["done"] + 1
            result.swept += 1
        if not self.order or (progress.get("after") is not None and progress["after"] >= self.order[-1]):
            self.finish(progress, result)

    def sweep_blocks(self, wallets: dict[str, datetime], progress: dict[str, Any], head_timestamp: int,
                     result: CycleResult) -> None:
        """The blocks of the last RECONCILE_INTERVAL_SECONDS of chain time up to the scan's cursor."""
        with self.db.Session() as session:
            cursor = self.view.state(session, "block_cursor")
        if cursor is None:
            return
        if "next_block" not in progress:
            # The interval's blocks at the chain's pace (one a second at the most, whatever a test's setting).
            span = int(self.interval() / max(self.config.tron_block_seconds, 1.0))
            progress["end_block"] = int(cursor["number"])
            progress["next_block"] = max(0, progress["end_block"] - span + 1)
        while progress["next_block"] <= progress["end_block"]:
            if self.blocks.spent():
                return
            block = self.blocks.read_block(progress["next_block"], head_timestamp)
            if block is None:
                return  # not yet complete on the upstreams asked: again next cycle
            for info in block[1]:
                if info.success:
                    self.blocks.take(info, wallets, result, FOUND_BY_RECONCILIATION)
            progress["next_block"] += 1
            result.swept += 1
        self.finish(progress, result)

    def finish(self, progress: dict[str, Any], result: CycleResult) -> None:
        progress["complete"], progress["last_complete_at"] = True, time.time()
        result.passes += 1
        logger.info("reconciliation pass complete (%s, %d wallets)", progress["mode"], progress.get("done", 0))
