"""What the watcher believes about the chain it reads: the accepted solid head and how far it has read.

Everything here is recorded per chain (network and token contract, ``Config.chain_key``), so a change of
``TRON_NETWORK`` or ``USDT_CONTRACT`` never reuses a cursor of another chain.

Nothing upstream is believed alone. A solid head is accepted only when it is plausible against the last accepted
one and this machine's clock (:func:`implausibility`); cursors never move past an accepted head.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, text
from sqlalchemy.orm import Session

from chain.answers import BlockHeader, BlockRef, TronError
from database import Database
from infra.config import Config
from infra.times import ms_to_datetime, to_ms
from ledger.matching import keeps_wallet_watched
from ledger.service_state import read_state, write_state
from models import Payment, WalletCursor
from tron_client import TronClient

logger = logging.getLogger(__name__)

OVERLAP_MS = 60_000  # re-read the last minute: page and clock boundaries never drop a transfer
# A solid head may advance by the blocks the elapsed time allows plus this many: nodes of one pool differ by some
# blocks, and the first head accepted after a start may come from one that is behind.
HEAD_MARGIN_BLOCKS = 30
HEAD_TRIES = 3  # answers asked for a plausible solid head per cycle


# --- the solid head ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AcceptedHead:
    number: int
    timestamp: int  # ms, chain time
    accepted_at: float  # unix seconds, this machine's clock
    header: BlockHeader | None = field(default=None, compare=False)  # the answer it was read from (not stored)

    def as_ref(self) -> BlockRef:
        return BlockRef(self.number, self.timestamp)


def implausibility(head: BlockRef, last: AcceptedHead | None, now: float, block_seconds: float,
                   skew_seconds: float) -> str | None:
    """Why ``head`` cannot be believed, or None when it is plausible.

    Refused: a timestamp ahead of this machine's clock by more than ``skew_seconds``; a number below the last
    accepted head's (the answer of a node behind the others); more blocks since the last accepted head than the
    time since it allows at one block every ``block_seconds``, plus ``HEAD_MARGIN_BLOCKS``; or more blocks than
    chain time passed (blocks are at least ``block_seconds`` apart in chain time too).

    "The time since it" is the longer of the time since it was accepted and the time since its own timestamp: a
    head accepted from a node far behind the others must not make the true heads that follow look like jumps."""
    ahead = head.timestamp / 1000 - now
    if ahead > skew_seconds:
        return f"its timestamp is {ahead:.0f}s ahead of this machine's clock (at most {skew_seconds:g}s allowed)"
    if last is None:
        return None
    if head.number < last.number:
        return f"it went back from block {last.number} to {head.number} (a node behind the others)"
    advanced = head.number - last.number
    elapsed = max(0.0, now - last.accepted_at, now - last.timestamp / 1000)
    allowed = int(elapsed / block_seconds) + HEAD_MARGIN_BLOCKS
    if advanced > allowed:
        return (f"it jumped {advanced} blocks in {elapsed:.0f}s "
                f"(at most {allowed} at one block every {block_seconds:g}s)")
    chain_ms = head.timestamp - last.timestamp
    if advanced > 0 and chain_ms < advanced * block_seconds * 1000:
        return f"its {advanced} new blocks span only {chain_ms / 1000:g}s of chain time"
    return None


# --- cursors -------------------------------------------------------------------------------------

def read_from(cursor: int | None, oldest_candidate: datetime) -> int:
    """Where to (re)start reading a wallet: its cursor, but never before its oldest candidate was created
    (earlier money cannot go to any of them: an address reused after a month is not read back a month), minus
    the overlap."""
    return max(cursor or 0, to_ms(oldest_candidate)) - OVERLAP_MS


class ChainView:
    """The accepted head and the cursors of one chain, read and written in the caller's session."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.chain = config.chain_key

    def _key(self, name: str) -> str:
        return f"{name}:{self.chain}"  # at most 60 characters: service_state keys hold 64

    # heads: the solid one ("solid_head") and, read for detection only, the full node's ("head")
    def accepted_head(self, session: Session, name: str = "solid_head") -> AcceptedHead | None:
        value = read_state(session, self._key(name))
        return AcceptedHead(int(value["number"]), int(value["timestamp"]), float(value["accepted_at"])) \
            if value else None

    def accept_head(self, session: Session, head: AcceptedHead, name: str = "solid_head") -> None:
        write_state(session, self._key(name),
                    {"number": head.number, "timestamp": head.timestamp, "accepted_at": head.accepted_at})

    def check(self, head: BlockRef, last: AcceptedHead | None, now: float) -> str | None:
        return implausibility(head, last, now, self.config.tron_block_seconds,
                              self.config.upstream_clock_skew_seconds)

    # named values of this chain: the block cursor, the strategy, the reconciliation's progress
    def state(self, session: Session, name: str) -> Any:
        return read_state(session, self._key(name))

    def set_state(self, session: Session, name: str, value: Any) -> None:
        write_state(session, self._key(name), value)

    # wallets
    def wallet_cursors(self, session: Session, wallets: list[str]) -> dict[str, int]:
        """How far each of `wallets` has been read (chain ms): its own cursor, and at least where the blocks strategy
        read every watched wallet up to (`read_floor`). A wallet never read is left out."""
        cursors = dict(session.execute(
            select(WalletCursor.wallet_address, WalletCursor.last_checked_timestamp)
            .where(WalletCursor.chain == self.chain, WalletCursor.wallet_address.in_(wallets))
        ).all())
        floor = self.read_floor(session)
        if floor is None:
            return cursors
        return {wallet: max(cursors.get(wallet, floor), floor) for wallet in wallets}

    def read_floor(self, session: Session) -> int | None:
        """The chain time (ms) every watched wallet has been read up to by the blocks strategy: its block cursor,
        which it moves instead of a cursor per wallet. Still true after a switch to the account strategy (the
        block cursor then stays where the blocks strategy left it); None when it never read."""
        cursor = self.state(session, "block_cursor")
        return int(cursor["timestamp"]) if cursor else None

    def save_wallet_cursors(self, session: Session, wallets: list[str], value: int, *,
                            only_lower: bool = False) -> None:
        """Move the cursors of `wallets` to `value` (never backwards, or never forwards with only_lower): one
        statement however many wallets (the blocks strategy moves every watched wallet each cycle)."""
        if not wallets:
            return
        pick = "LEAST" if only_lower else "GREATEST"
        session.execute(text(
            "INSERT INTO wallet_cursors (chain, wallet_address, last_checked_timestamp) "
            "SELECT :chain, w, :value FROM unnest(CAST(:wallets AS varchar[])) AS w "
            "ON CONFLICT (chain, wallet_address) DO UPDATE SET "
            f"last_checked_timestamp = {pick}(wallet_cursors.last_checked_timestamp, EXCLUDED.last_checked_timestamp), "
            "updated_at = now()"
        ), {"chain": self.chain, "value": int(value), "wallets": sorted(set(wallets))})

    def watched_wallets(self, session: Session, created_since: datetime | None = None, *,
                        read_floor: int | None = None) -> dict[str, datetime]:
        """Wallets with candidates, or with a payment completed within the late window, each with the creation time
        of its oldest such payment.

        With `created_since`, only candidates created since then count (a cheap refresh through the created_at
        index: the blocks strategy merges it into the list it read at the start of the cycle). `read_floor`: the
        chain time every wallet has been read up to whatever its own cursor says (the blocks strategy's cursor)."""
        # The late window runs in chain time: up to where each wallet has been read (a wallet never read is
        # watched whatever the wall clock says), so a watcher that is behind loses no late money.
        window = timedelta(seconds=self.config.late_payment_window_seconds)
        cursor = WalletCursor.last_checked_timestamp
        if read_floor is not None:
            read_to = func.to_timestamp(func.greatest(func.coalesce(cursor, 0), int(read_floor)) / 1000.0)
            # Every wallet is read at least to the floor: a payment closed before floor - window is history, and
            # this bound, on the closing time's own partial index, keeps the read from visiting it.
            since = ms_to_datetime(int(read_floor)) - window

            def within(closed: Any) -> ColumnElement[bool]:
                return and_(closed >= since, closed + window >= read_to)
        else:
            read_to = func.to_timestamp(cursor / 1000.0)
            unread = cursor.is_(None)

            def within(closed: Any) -> ColumnElement[bool]:
                return unread | (closed + window >= read_to)
        query = (
            select(Payment.wallet_address, func.min(Payment.created_at))
            .outerjoin(WalletCursor, and_(WalletCursor.wallet_address == Payment.wallet_address,
                                          WalletCursor.chain == self.chain))
            .where(keeps_wallet_watched(within))
            .group_by(Payment.wallet_address)
        )
        if created_since is not None:
            query = query.where(Payment.created_at >= created_since)
        return {wallet: oldest for wallet, oldest in session.execute(query)}


def read_plausible_head(db: Database, client: TronClient, view: ChainView, refused: list[str],
                        errors: list[str], *, solid: bool = True) -> AcceptedHead | None:
    """The highest solid head believed by the rules above: every upstream is asked once (an upstream behind the
    others must not hold the scan back or hide how far behind it is), a refused answer is asked again while
    nothing plausible came, and refusals are noted in `refused` for /health. When no answer is plausible this
    cycle, the last accepted head stands: cursors never pass what a plausible head allowed.

    With `solid=False`, the same for the full node's head (what detection reads above the solid head), judged by
    the same rules against the last head accepted so: one lying upstream cannot fabricate a detection."""
    name, kind = ("solid_head", "solid head") if solid else ("head", "head")
    with db.Session() as session:
        last = view.accepted_head(session, name)
    upstreams = client.ordered_upstreams()
    error: TronError | None = None
    believed: list[AcceptedHead] = []
    for attempt in range(max(HEAD_TRIES, len(upstreams))):
        if attempt >= len(upstreams) and believed:
            break
        upstream = upstreams[attempt % len(upstreams)]
        try:
            header = client.only(upstream).get_now_block(solid)
        except TronError as exc:
            error = error or exc  # the first is the telling one ("HTTP 503"), not "paused until"
            continue
        now = time.time()
        answer = BlockRef(header.number, header.timestamp)
        reason = view.check(answer, last, now)
        if reason is None:
            believed.append(AcceptedHead(answer.number, answer.timestamp, now, header))
            continue
        refusal = f"{upstream.name}: {kind} {answer.number} refused: {reason}"
        if refusal not in refused:
            logger.warning("%s", refusal)
            refused.append(refusal)
    if believed:
        accepted = max(believed, key=lambda head: head.number)
        with db.transaction() as session:
            view.accept_head(session, accepted, name)
        return accepted
    if error is not None and not refused:
        raise error  # no upstream answered at all: nothing can be read this cycle
    if last is None:
        errors.append(f"no plausible {kind} yet; waiting for one")
    return last

