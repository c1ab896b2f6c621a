"""The simulator's in-memory chain: blocks, transactions, Transfer logs and a per-address index.

Everything here is guarded by the :class:`Chain`'s lock; JSON shapes live in :mod:`tron_sim.shapes`.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import base58

from addresses import decode_address

logger = logging.getLogger(__name__)

USDT_MAINNET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
SLOT_MS = 3000  # TRON produces a block every 3 s
FIRST_BLOCK = 70_000_000

# Sort key of a Transfer record: (block_timestamp, block_number, position of tx in block, log index).
RecordKey = tuple[int, int, int, int]


def random_address() -> str:
    """A fresh, valid base58check TRON address."""
    return base58.b58encode_check(b"\x41" + os.urandom(20)).decode()


def new_tx_id(*parts: object) -> str:
    seed = "|".join(str(p) for p in parts).encode() + os.urandom(16)
    return hashlib.sha256(seed).hexdigest()


@dataclass(frozen=True)
class Token:
    address: str
    symbol: str = "USDT"
    name: str = "Tether USD"
    decimals: int = 6


@dataclass(frozen=True)
class TransferSpec:
    """One TRC20 Transfer event inside a transaction."""

    contract: str
    from_address: str
    to_address: str
    amount: int


@dataclass
class Tx:
    """A transaction of the simulated chain (kind ``trc20`` or ``trx``)."""

    tx_id: str
    kind: str
    transfers: tuple[TransferSpec, ...] = ()
    reverted: bool = False
    internal: bool = False
    list_reverted: bool = True
    owner: str = ""
    trx_to: str = ""
    trx_amount: int = 0
    caller_contract: str = ""  # top-level contract of an internal-call tx (a DEX / multisend)
    block_number: int | None = None
    block_timestamp: int | None = None
    index_in_block: int = 0


@dataclass
class Block:
    number: int
    timestamp: int
    parent_hash: str
    block_id: str
    txs: list[Tx] = field(default_factory=list)


@dataclass(frozen=True)
class Record:
    """One row of the TRC20 list: one Transfer log (or listed transfer of a reverted tx)."""

    key: RecordKey
    tx_id: str
    token: Token
    from_address: str
    to_address: str
    amount: int


class AddressIndex:
    """Records of one address, kept sorted by key (blocks are appended in chain order)."""

    def __init__(self) -> None:
        self.keys: list[RecordKey] = []
        self.records: list[Record] = []

    def append(self, record: Record) -> None:
        self.keys.append(record.key)
        self.records.append(record)


def block_id_for(number: int, timestamp: int) -> str:
    digest = hashlib.sha256(f"{number}:{timestamp}".encode()).hexdigest()
    return f"{number:016x}" + digest[16:]


class Chain:
    """Blocks, mempool and indexes. All public methods are thread-safe."""

    def __init__(self, usdt_contract: str = USDT_MAINNET, solidify_depth: int = 19,
                 start_time_ms: int | None = None, first_block: int = FIRST_BLOCK,
                 follow_clock: bool = False) -> None:
        """``follow_clock``: a block is never older than the wall clock when it is mined, so chain time
        keeps up with real time however rarely blocks are mined on demand (tests compare the two)."""
        decode_address(usdt_contract)
        self.follow_clock = follow_clock
        if solidify_depth < 0:
            raise ValueError("solidify_depth must be >= 0")
        self.lock = threading.RLock()
        self.usdt = Token(usdt_contract)
        self.solidify_depth = solidify_depth
        self.tokens: dict[str, Token] = {usdt_contract: self.usdt}
        self.blocks: list[Block] = []
        self.mempool: list[Tx] = []
        self.txs: dict[str, Tx] = {}
        self.by_to: dict[str, AddressIndex] = {}
        self.by_from: dict[str, AddressIndex] = {}
        self.by_any: dict[str, AddressIndex] = {}
        self._pending_advance_ms = 0
        self._counter = itertools.count()
        start = int(time.time() * 1000) if start_time_ms is None else int(start_time_ms)
        self._create_initial_blocks(first_block, start)

    # -- construction -------------------------------------------------------------------------
    def _create_initial_blocks(self, head_number: int, head_timestamp: int) -> None:
        """Empty blocks so that head = ``head_number`` at ``head_timestamp`` and the solid head exists."""
        parent = "0" * 64
        for number in range(head_number - self.solidify_depth, head_number + 1):
            timestamp = head_timestamp - SLOT_MS * (head_number - number)
            block = Block(number, timestamp, parent, block_id_for(number, timestamp))
            self.blocks.append(block)
            parent = block.block_id

    # -- reading ------------------------------------------------------------------------------
    @property
    def head(self) -> Block:
        return self.blocks[-1]

    @property
    def solid_number(self) -> int:
        return self.head.number - self.solidify_depth

    def block(self, number: int) -> Block | None:
        index = number - self.blocks[0].number
        if 0 <= index < len(self.blocks):
            return self.blocks[index]
        return None

    @property
    def solid_block(self) -> Block:
        block = self.block(self.solid_number)
        assert block is not None
        return block

    def is_solid(self, tx: Tx) -> bool:
        return tx.block_number is not None and tx.block_number <= self.solid_number

    def token(self, contract: str) -> Token:
        """The token at ``contract``; unknown contracts are fake tokens that still call themselves USDT."""
        token = self.tokens.get(contract)
        if token is None:
            token = Token(contract)
            self.tokens[contract] = token
        return token

    # -- writing ------------------------------------------------------------------------------
    def register_token(self, token: Token) -> None:
        with self.lock:
            self.tokens[token.address] = token

    def submit(self, tx: Tx) -> str:
        with self.lock:
            self.mempool.append(tx)
            self.txs[tx.tx_id] = tx
        return tx.tx_id

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("chain time only moves forward")
        with self.lock:
            self._pending_advance_ms += ms

    def mine(self, count: int = 1) -> int:
        with self.lock:
            for _ in range(max(0, count)):
                self._mine_one()
            return self.head.number

    def blocks_to_solidify(self) -> int:
        """How many blocks to mine so that every queued or mined tx is solidified."""
        with self.lock:
            last = max((tx.block_number or 0 for tx in self.txs.values()), default=0)
            if self.mempool:
                return self.solidify_depth + 1
            return max(0, last - self.solid_number)

    def _mine_one(self) -> None:
        parent = self.head
        number = parent.number + 1
        timestamp = parent.timestamp + SLOT_MS + self._pending_advance_ms
        if self.follow_clock:
            timestamp = max(timestamp, int(time.time() * 1000))
        self._pending_advance_ms = 0
        block = Block(number, timestamp, parent.block_id, block_id_for(number, timestamp))
        block.txs, self.mempool = self.mempool, []
        for position, tx in enumerate(block.txs):
            tx.block_number, tx.block_timestamp, tx.index_in_block = number, timestamp, position
            self._index(tx)
        self.blocks.append(block)
        if block.txs:
            logger.debug("mined block %d with %d transactions", number, len(block.txs))

    def _index(self, tx: Tx) -> None:
        if tx.kind != "trc20" or (tx.reverted and not tx.list_reverted):
            return
        assert tx.block_number is not None and tx.block_timestamp is not None
        offset = 1 if tx.internal else 0  # internal-call txs carry the caller's own event first
        for log_index, spec in enumerate(tx.transfers):
            key = (tx.block_timestamp, tx.block_number, tx.index_in_block, log_index + offset)
            record = Record(key, tx.tx_id, self.token(spec.contract), spec.from_address, spec.to_address,
                            spec.amount)
            self.by_to.setdefault(spec.to_address, AddressIndex()).append(record)
            self.by_from.setdefault(spec.from_address, AddressIndex()).append(record)
            self.by_any.setdefault(spec.to_address, AddressIndex()).append(record)
            if spec.from_address != spec.to_address:
                self.by_any.setdefault(spec.from_address, AddressIndex()).append(record)


@dataclass(frozen=True)
class ListQuery:
    """Parameters of one TRC20 list page (already validated)."""

    address: str
    only_confirmed: bool = False
    only_unconfirmed: bool = False
    only_to: bool = False
    only_from: bool = False
    contract: str | None = None
    min_timestamp: int = 0
    max_timestamp: int | None = None
    descending: bool = True
    limit: int = 20
    after: RecordKey | None = None


def query_records(chain: Chain, query: ListQuery) -> tuple[list[Record], bool]:
    """One page of records and whether more follow. Confirmation is by timestamp: block times strictly grow."""
    index = _pick_index(chain, query)
    if index is None:
        return [], False
    low_ts, high_ts = query.min_timestamp, query.max_timestamp
    solid_ts = chain.solid_block.timestamp
    if query.only_confirmed:
        high_ts = solid_ts if high_ts is None else min(high_ts, solid_ts)
    elif query.only_unconfirmed:
        low_ts = max(low_ts, solid_ts + 1)
    start = bisect.bisect_left(index.keys, (low_ts,))
    end = len(index.keys) if high_ts is None else bisect.bisect_left(index.keys, (high_ts + 1,))
    if query.after is not None:
        if query.descending:
            end = min(end, bisect.bisect_left(index.keys, query.after))
        else:
            start = max(start, bisect.bisect_right(index.keys, query.after))
    positions = range(end - 1, start - 1, -1) if query.descending else range(start, end)
    page: list[Record] = []
    for position in positions:
        record = index.records[position]
        if query.contract is not None and record.token.address != query.contract:
            continue
        if len(page) == query.limit:
            return page, True
        page.append(record)
    return page, False


def _pick_index(chain: Chain, query: ListQuery) -> AddressIndex | None:
    if query.only_to and not query.only_from:
        return chain.by_to.get(query.address)
    if query.only_from and not query.only_to:
        return chain.by_from.get(query.address)
    return chain.by_any.get(query.address)
