"""Reading above the solid head (``DETECT_UNCONFIRMED``): money announced the moment it is in a block.

Each cycle the full node's head is accepted by the same plausibility rules as the solid head (one lying upstream
cannot fabricate a detection), then the blocks between the solid head and it are read from the full node's API
(``/wallet/...``) and kept, linked by their parent ids:

* a block is read once: the head's answer (``getnowblock``) carries its id, parent and transaction ids, so a cycle
  that follows the chain block by block costs the head plus one receipt list per block; a block is fetched by
  number only when a cycle missed it (``getblockbynum``);
* a block's receipts are used only when they are exactly its transactions' (a node of another fork, or one behind,
  answers other or no receipts: "not yet");
* a block replaced by another of the same number (a fork) drops what was seen in it (``ledger.detection``);
* once the solid head's id is one of the kept blocks, the kept blocks linked below it are the solidified ones: the
  block scan takes their receipts from here instead of asking ``/walletsolidity`` again (:meth:`solid_answer`).

What is seen goes to ``ledger.detection.note_unconfirmed``: listed on the payment it is for and announced once;
never a credit.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from chain.answers import BlockHeader, TronError, TxInfo, public_error
from chain.chain_view import OVERLAP_MS, AcceptedHead, ChainView, read_plausible_head
from database import Database
from infra import instruments
from infra.config import Config
from infra.times import db_now, ms_to_datetime, to_ms
from ledger.detection import clear_replaced, note_unconfirmed
from ledger.service_state import CHAIN_HEAD, write_state
from tron_client import TronClient

if TYPE_CHECKING:
    from chain.scanning import CycleResult, Scan

logger = logging.getLogger(__name__)

MAX_ABOVE_SOLID = 60  # blocks read above the solid head at the most (TRON solidifies at about 19)
KEPT_BELOW_SOLID = 200  # kept blocks below the solid head, for a block scan that is behind


@dataclass(frozen=True)
class SeenBlock:
    header: BlockHeader
    infos: tuple[TxInfo, ...]


class HeadWatch:
    """The blocks above the solid head, read once each and kept by number (see the module's docstring)."""

    def __init__(self, db: Database, config: Config, client: TronClient, view: ChainView) -> None:
        self.db, self.config, self.client, self.view = db, config, client, view
        self.kept: dict[int, SeenBlock] = {}
        self.headers: dict[int, BlockHeader] = {}  # headers fetched by number, kept across cycles for the walk down
        self.solid_ids: dict[int, str] = {}  # numbers of kept blocks on the solid chain, with their ids
        self.head: AcceptedHead | None = None
        self.solid_number: int | None = None  # the solid head of the last cycle

    # -- one cycle --------------------------------------------------------------------------------
    def run(self, solid: AcceptedHead, wallets: dict[str, datetime], reader: Scan, result: CycleResult) -> None:
        """Accept a plausible head, read the blocks up to it that are not kept yet (within `reader`'s budget),
        and note what they pay to `wallets`."""
        try:
            head = read_plausible_head(self.db, self.client, self.view, result.refused, result.errors, solid=False)
            if head is None or head.header is None or head.number < solid.number:
                return  # no new plausible head this cycle: what was seen stays as it was
            self.head = head
            chain = self.walk_down(head.header, solid.number, reader)
            for header in reversed(chain):  # oldest first: money is noted in chain order
                if reader.stop.is_set() or reader.spent():
                    break
                if not self.take_block(header, wallets, reader, result):
                    break
        except TronError as exc:  # detection never holds up the solid scan: said in /health, the cycle goes on
            logger.warning("blocks above the solid head not read this cycle: %s", exc)
            result.errors.append(f"detection: blocks above the solid head not read: {public_error(exc)}")
            return
        with self.db.transaction() as session:
            write_state(session, CHAIN_HEAD, {"number": head.number, "solid_number": solid.number,
                                              "timestamp": head.timestamp})

    def walk_down(self, top: BlockHeader, solid_number: int, reader: Scan) -> list[BlockHeader]:
        """The headers from `top` down to the first one kept with the id its child names (or to the solid head, or
        MAX_ABOVE_SOLID blocks), newest first: a fork shows as a kept block whose id is not its child's parent."""
        chain = [top]
        while chain[-1].number - 1 > solid_number and len(chain) < MAX_ABOVE_SOLID:
            below, parent_id = chain[-1].number - 1, chain[-1].parent_id
            kept = self.kept.get(below)
            if kept is not None and kept.header.block_id == parent_id:
                break
            header = self.headers.get(below)
            if header is None or header.block_id != parent_id:
                if reader.spent():
                    return []  # not down to a known block this cycle: nothing is guessed (the headers read stay)
                header = reader.ask(lambda view, n=below, p=parent_id: self.parent_or_none(view, n, p))
                if header is None:
                    return []  # no upstream gave that parent yet: asked again next cycle
                self.headers[below] = header
            chain.append(header)
        return chain

    @staticmethod
    def parent_or_none(view: TronClient, number: int, parent_id: str) -> BlockHeader | None:
        """Block `number` as the full node has it, when it is the parent named (else "not yet": a node of another
        fork, or behind)."""
        header = view.get_block(number, solid=False)
        return header if header is not None and header.block_id == parent_id else None

    def take_block(self, header: BlockHeader, wallets: dict[str, datetime], reader: Scan,
                   result: CycleResult) -> bool:
        """Read one block's receipts unless it is kept already, keep it, and note its money; False when its
        receipts could not be had complete (what follows waits for the next cycle)."""
        kept = self.kept.get(header.number)
        if kept is not None and kept.header.block_id == header.block_id:
            return True
        infos: tuple[TxInfo, ...] = ()
        if header.tx_ids:
            expected = set(header.tx_ids)
            answer = reader.ask(lambda view: self.receipts_or_none(view, header.number, expected, header.timestamp))
            if answer is None:
                return False
            infos = answer
        replaced = kept is not None
        self.kept[header.number] = SeenBlock(header, infos)
        late = self.config.late_payment_window_seconds
        with self.db.transaction() as session:
            # the wallets of payments created since the cycle's list was read (a block is read once, so a payment
            # created just before it must be known now), with the overlap for slow commits
            since = ms_to_datetime(to_ms(db_now(session)) - OVERLAP_MS)
            for wallet, oldest in self.view.watched_wallets(session, since).items():
                wallets.setdefault(wallet, oldest)  # in place: the cycle's own copy, however large
            if replaced:
                dropped = clear_replaced(session, header.number, header.block_id)
                logger.warning("block %d was replaced (a fork): %d unconfirmed transfer(s) dropped", header.number,
                               dropped)
            for info in infos:
                if not info.success:
                    continue  # a failed transaction is never announced
                for log in info.transfers:
                    if log.to_address in wallets and note_unconfirmed(session, log, header.block_id, late):
                        result.detected_unconfirmed += 1
                        instruments.UNCONFIRMED_LATENCY.observe(max(0.0, time.time() - header.timestamp / 1000))
        return True

    @staticmethod
    def receipts_or_none(view: TronClient, number: int, expected: set[str], timestamp: int
                         ) -> tuple[TxInfo, ...] | None:
        """The block's receipts when they are exactly its transactions' and of its time (else "not yet": a node
        behind, or on another fork)."""
        infos = view.get_block_infos(number, solid=False)
        if {info.transaction_hash for info in infos} != expected or any(i.block_timestamp != timestamp for i in infos):
            return None
        return tuple(infos)

    # -- the solid chain --------------------------------------------------------------------------
    def settle(self, solid: AcceptedHead) -> None:
        """Which kept blocks are solidified: those linked below the solid head when its id is a kept block's. Older
        kept blocks are let go."""
        self.solid_ids = {}
        self.solid_number = solid.number
        header = solid.header
        if header is not None and header.block_id:
            number, block_id = header.number, header.block_id
            while (kept := self.kept.get(number)) is not None and kept.header.block_id == block_id:
                self.solid_ids[number] = block_id
                number, block_id = number - 1, kept.header.parent_id
        for number in [n for n in self.kept if n < solid.number - KEPT_BELOW_SOLID]:
            del self.kept[number]
        for number in [n for n in self.headers if n <= solid.number]:
            del self.headers[number]

    def solid_answer(self, number: int, wallets: set[str] | dict[str, datetime]) -> tuple[int, list[TxInfo]] | None:
        """(timestamp, receipts) of solidified block `number` when it is kept (read above the solid head, then
        solidified unchanged) and pays none of `wallets`; None otherwise. A block that pays a watched wallet is read
        again from the solidified API before anything is credited: what the full node said is never credited
        alone (about one request per paying block)."""
        if number not in self.solid_ids:
            return None
        kept = self.kept[number]
        if any(log.to_address in wallets for info in kept.infos for log in (*info.transfers, *info.rejected)):
            return None
        return kept.header.timestamp, list(kept.infos)
