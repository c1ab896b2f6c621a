"""The watched wallets, kept from cycle to cycle instead of read whole every cycle.

A wallet is watched while a payment on it may take money, or completed within the late window
(``ChainView.watched_wallets``). Reading that whole set is a grouped scan of every such payment: with a deposit
address per payment, a million rows every cycle. The set only grows when payments are created, so each cycle adds
the wallets of the payments created since the last read (through the ``created_at`` index, with an overlap for slow
commits), and the whole set is read again only every ``RELOAD_SECONDS``, in the background, to let go of the wallets
whose windows have ended. While a whole read is cheap (under ``CHEAP_LOAD_SECONDS``: thousands of wallets, not
hundreds of thousands) it is done every cycle. A wallet kept a little longer than its window costs nothing: what it
receives then has no candidate and is stored as unmatched, as for any watched wallet.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from chain.chain_view import OVERLAP_MS, ChainView
from database import Database
from infra.times import db_now, ms_to_datetime, to_ms

logger = logging.getLogger(__name__)

RELOAD_SECONDS = 600.0  # the whole set is read again this often (in the background)
CHEAP_LOAD_SECONDS = 0.05  # a whole read this quick is simply done every cycle (exact, and nothing to gain)


class WatchedWallets:
    """Each watched wallet with the creation time of its oldest watched payment (see the module's docstring)."""

    def __init__(self, db: Database, view: ChainView, reload_seconds: float = RELOAD_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.view, self.reload_seconds, self.clock = db, view, reload_seconds, clock
        self.wallets: dict[str, datetime] = {}
        self.read_at_ms: int | None = None  # database time of the last read (whole or since)
        self.loaded_at: float | None = None  # when the whole set was last read (this process's clock)
        self.load_seconds: float | None = None  # how long that read took
        self.lock = threading.Lock()
        self.reloading: threading.Thread | None = None

    def current(self, read_floor: int | None = None) -> tuple[dict[str, datetime], int]:
        """The watched wallets now, and the database time they were listed at: read whole the first time (and
        when `read_floor`, the blocks strategy's cursor, changes how far wallets count as read: see
        ChainView.watched_wallets), then only what was created since the last read."""
        if self.read_at_ms is None or (self.load_seconds is not None and self.load_seconds < CHEAP_LOAD_SECONDS):
            self.load(read_floor)
        else:
            with self.db.Session() as session:
                listed_at = to_ms(db_now(session))
                added = self.view.watched_wallets(session, ms_to_datetime(self.read_at_ms - OVERLAP_MS),
                                                  read_floor=read_floor)
            with self.lock:
                for wallet, oldest in added.items():
                    known = self.wallets.get(wallet)
                    self.wallets[wallet] = oldest if known is None else min(known, oldest)
                self.read_at_ms = listed_at
            if self.loaded_at is not None and self.clock() - self.loaded_at >= self.reload_seconds:
                self.reload_in_background(read_floor)
        with self.lock:
            return dict(self.wallets), self.read_at_ms  # type: ignore[return-value]

    def load(self, read_floor: int | None = None) -> None:
        """Read the whole set now."""
        started = time.monotonic()
        with self.db.Session() as session:
            listed_at = to_ms(db_now(session))
            wallets = self.view.watched_wallets(session, read_floor=read_floor)
        with self.lock:
            self.wallets, self.read_at_ms, self.loaded_at = wallets, listed_at, self.clock()
            self.load_seconds = time.monotonic() - started

    def reload_in_background(self, read_floor: int | None) -> None:
        """Read the whole set again in a thread of its own; what was created meanwhile is added again by the next
        incremental read."""
        if self.reloading is not None and self.reloading.is_alive():
            return
        self.loaded_at = self.clock()  # one reload per period, even if this one fails

        def reload() -> None:
            started = time.monotonic()
            try:
                with self.db.Session() as session:
                    listed_at = to_ms(db_now(session))
                    wallets = self.view.watched_wallets(session, read_floor=read_floor)
            except Exception as exc:  # the next period tries again; the set in use stays as it was
                logger.warning("watched wallets not read again: %s: %s", type(exc).__name__, exc)
                return
            with self.lock:
                # what was created during the read is read again by the next cycle's incremental read
                self.wallets = wallets
                self.read_at_ms = min(self.read_at_ms or listed_at, listed_at)
                self.load_seconds = time.monotonic() - started
            logger.info("watched wallets read again: %d", len(wallets))

        self.reloading = threading.Thread(target=reload, name="watched-wallets", daemon=True)
        self.reloading.start()
