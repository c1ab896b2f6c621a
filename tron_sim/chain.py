"""The simulator's in-memory chain: blocks, transactions, token logs, accounts and the indexes TronGrid keeps.

Everything here is guarded by the :class:`Chain`'s lock; JSON shapes live in :mod:`tron_sim.shapes`. Several
simulators may serve one chain (see ``Simulator.replica``).
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import base58

from infra.addresses import decode_address
from tron_sim.accounts import (
    REVERTED_CALL,
    TRANSFER_TO_HOLDER,
    TRANSFER_TO_NEW_HOLDER,
    Account,
    Accounts,
    Energy,
    Receipt,
)
from tron_sim.contract import CONTRACT_NAME, TokenLedger
from tron_sim.txraw import (
    APPROVE_SELECTOR,
    MULTISEND_SELECTOR,
    TRANSFER_SELECTOR,
    RawContract,
    RawData,
    call_data,
    ref_block,
    remember_address,
)

logger = logging.getLogger(__name__)

USDT_MAINNET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
SLOT_MS = 3000  # TRON produces a block every 3 s, on 3-second boundaries of unix time
FIRST_BLOCK = 70_000_000
HISTORY_BLOCKS = 1200  # empty blocks below the start head: an hour of chain a lagging node can still answer
NOISE_ADDRESSES = 256
UINT256_LIMIT = 1 << 256
TX_LIFETIME_MS = 60_000  # expiration = reference block time + 60 s, as wallets set it
TRC20_FEE_LIMIT = 50_000_000
MALFORMED_KINDS = ("data", "short", "topics")
EVENTS = ("Transfer", "Approval")

# Sort key of a log record: (block_timestamp, block_number, position of tx in block, log index).
RecordKey = tuple[int, int, int, int]


def random_address(rng: random.Random | None = None) -> str:
    """A fresh, valid base58check TRON address (from ``rng`` when given, for reproducible addresses)."""
    raw = b"\x41" + (rng or _SYSTEM_RANDOM).randbytes(20)
    address = base58.b58encode_check(raw).decode()
    remember_address(address, raw)
    return address


_SYSTEM_RANDOM = random.SystemRandom()


def align_to_slot(ms: int, slot_ms: int = SLOT_MS) -> int:
    """The first slot boundary (3 seconds on TRON) at or after ``ms``."""
    return -(-ms // slot_ms) * slot_ms


@dataclass(frozen=True)
class Token:
    address: str
    symbol: str = "USDT"
    name: str = "Tether USD"
    decimals: int = 6


@dataclass(frozen=True)
class LogSpec:
    """One TRC20 event log inside a transaction: ``Transfer(from, to, value)`` or ``Approval(owner, spender,
    value)`` (``from_address``/``to_address`` are the owner/spender then)."""

    contract: str
    from_address: str
    to_address: str
    amount: int
    event: str = "Transfer"
    index_token_info: bool = True  # False: the TRC20 list shows this record with ``token_info: {}``
    malformed: str | None = None  # one of MALFORMED_KINDS: the receipt's log is broken that way


@dataclass
class Tx:
    """A transaction of the simulated chain (kind ``trc20`` or ``trx``)."""

    tx_id: str
    kind: str
    raw: RawData
    logs: tuple[LogSpec, ...] = ()
    reverted: bool = False
    internal: bool = False
    list_reverted: bool = True
    owner: str = ""
    trx_to: str = ""
    trx_amount: int = 0
    caller_contract: str = ""  # top-level contract of an internal-call tx (a DEX / multisend)
    noise: bool = False  # mainnet's background USDT traffic, not asked for by a test
    block_number: int | None = None
    block_timestamp: int | None = None
    index_in_block: int = 0
    receipt: Receipt | None = None  # what it cost, once mined (tron_sim.accounts)


@dataclass
class Block:
    number: int
    timestamp: int
    parent_hash: str
    block_id: str
    txs: list[Tx] = field(default_factory=list)


@dataclass(frozen=True)
class Record:
    """One indexed log: a row of the TRC20 list and of the contract events list."""

    key: RecordKey
    tx_id: str
    token: Token
    from_address: str
    to_address: str
    amount: int
    event: str = "Transfer"
    token_info: bool = True


class AddressIndex:
    """Records of one address (or contract), kept sorted by key (blocks are appended in chain order)."""

    def __init__(self) -> None:
        self.keys: list[RecordKey] = []
        self.records: list[Record] = []

    def append(self, record: Record) -> None:
        self.keys.append(record.key)
        self.records.append(record)


class EventIndex:
    """TronGrid's index of token logs: by recipient, by sender, by either (the TRC20 list), and by contract (the
    events list). A reverted call is listed (TronGrid shows it) unless the caller asked otherwise, but emitted no
    event."""

    def __init__(self) -> None:
        self.by_to: dict[str, AddressIndex] = {}
        self.by_from: dict[str, AddressIndex] = {}
        self.by_any: dict[str, AddressIndex] = {}
        self.by_contract: dict[str, AddressIndex] = {}

    def forget(self, tx_id: str) -> None:
        """Drop a transaction's records (its block was replaced by one without it)."""
        for indexes in (self.by_to, self.by_from, self.by_any, self.by_contract):
            for index in indexes.values():
                if any(r.tx_id == tx_id for r in index.records):
                    kept = [(k, r) for k, r in zip(index.keys, index.records, strict=True) if r.tx_id != tx_id]
                    index.keys = [k for k, _ in kept]
                    index.records = [r for _, r in kept]

    def add(self, tx: Tx, token: Callable[[str], Token]) -> None:
        """Index a mined transaction's logs; `token` gives a contract's token."""
        if tx.kind != "trc20" or (tx.reverted and not tx.list_reverted):
            return
        assert tx.block_number is not None and tx.block_timestamp is not None
        offset = 1 if tx.internal else 0  # internal-call txs carry the caller's own event first
        for log_index, spec in enumerate(tx.logs):
            key = (tx.block_timestamp, tx.block_number, tx.index_in_block, log_index + offset)
            record = Record(key, tx.tx_id, token(spec.contract), spec.from_address, spec.to_address,
                            spec.amount, spec.event, spec.index_token_info)
            self.by_to.setdefault(spec.to_address, AddressIndex()).append(record)
            self.by_from.setdefault(spec.from_address, AddressIndex()).append(record)
            self.by_any.setdefault(spec.to_address, AddressIndex()).append(record)
            if spec.from_address != spec.to_address:
                self.by_any.setdefault(spec.from_address, AddressIndex()).append(record)
            if not tx.reverted:  # a reverted call emitted nothing: no event for the events list
                self.by_contract.setdefault(spec.contract, AddressIndex()).append(record)


def block_id_for(number: int, timestamp: int, fork: int = 0) -> str:
    """A block's id: its number in the first 8 bytes (as TRON's), then a digest (`fork` tells a replacement apart)."""
    salt = f":{fork}" if fork else ""
    digest = hashlib.sha256(f"{number}:{timestamp}{salt}".encode()).hexdigest()
    return f"{number:016x}" + digest[16:]


class UsdtNoise:
    """Mainnet's background: USDT moving between the chain's own addresses, never a caller's; ``seed`` makes the
    addresses and amounts reproducible."""

    def __init__(self, per_block: int, seed: int | None) -> None:
        if per_block < 0:
            raise ValueError("usdt_noise_per_block must be >= 0")
        self.per_block = per_block
        self.rng = random.Random(seed)
        self.pool = [random_address(self.rng) for _ in range(NOISE_ADDRESSES)]

    def transfers(self, usdt: str) -> list[LogSpec]:
        """The next block's background transfers."""
        specs = []
        for _ in range(self.per_block):
            sender, receiver = self.rng.sample(self.pool, 2)
            specs.append(LogSpec(usdt, sender, receiver, self.rng.randrange(1, 10_000_000_000)))
        return specs


class Chain:
    """Blocks, mempool, accounts and indexes. All public methods are thread-safe."""

    def __init__(self, usdt_contract: str = USDT_MAINNET, solidify_depth: int = 19,
                 start_time_ms: int | None = None, first_block: int = FIRST_BLOCK,
                 follow_clock: bool = False, usdt_noise_per_block: int = 1, seed: int | None = None,
                 slot_ms: int = SLOT_MS) -> None:
        """``follow_clock``: a block is never older than the wall clock when it is mined, so chain time keeps up
        with real time however rarely blocks are mined on demand (tests compare the two).
        ``usdt_noise_per_block``: USDT transfers between the chain's own random addresses in every mined block
        (USDT moves in every mainnet block); ``seed`` makes those addresses and amounts reproducible. ``slot_ms``: the
        block interval of chain time (TRON's 3 s; the sandbox network's own)."""
        decode_address(usdt_contract)
        if solidify_depth < 0:
            raise ValueError("solidify_depth must be >= 0")
        if slot_ms < 1:
            raise ValueError("slot_ms must be >= 1")
        self.follow_clock = follow_clock
        self.slot_ms = slot_ms
        self.lock = threading.RLock()
        self.usdt = Token(usdt_contract)
        self.solidify_depth = solidify_depth
        self.usdt_noise_per_block = usdt_noise_per_block
        self.tokens: dict[str, Token] = {usdt_contract: self.usdt}
        self.blocks: list[Block] = []
        self.mempool: list[Tx] = []
        self.txs: dict[str, Tx] = {}
        self.accounts = Accounts()
        # the USDT contract's own account (java-tron creates it with the contract: type Contract, named after it)
        self.accounts[usdt_contract] = Account(create_time=0, contract_name=CONTRACT_NAME)
        self.ledger = TokenLedger()
        self.index = EventIndex()
        self._pending_advance_ms = 0
        self._last_user_block = 0
        self._tx_clock = 0
        self.forks = 0
        self.withheld: set[str] = set()  # transactions whose receipt no node gives (see withhold)
        self.noise = UsdtNoise(usdt_noise_per_block, seed)
        start = int(time.time() * 1000) if start_time_ms is None else int(start_time_ms)
        self._create_initial_blocks(first_block, align_to_slot(start, slot_ms))

    # -- construction -------------------------------------------------------------------------
    def _create_initial_blocks(self, head_number: int, head_timestamp: int) -> None:
        """Empty blocks so that head = ``head_number`` at ``head_timestamp``, with history below the solid head. The
        solid head carries the USDT noise of a block, so the event index lists a transfer from the start (on
        mainnet it always does)."""
        parent = "0" * 64
        for number in range(head_number - self.solidify_depth - HISTORY_BLOCKS, head_number + 1):
            timestamp = head_timestamp - self.slot_ms * (head_number - number)
            block = Block(number, timestamp, parent, block_id_for(number, timestamp))
            self.blocks.append(block)
            parent = block.block_id
            if number == head_number - self.solidify_depth:
                self._place(block, self._noise_txs())

    # -- reading ------------------------------------------------------------------------------
    @property
    def head(self) -> Block:
        return self.blocks[-1]

    @property
    def first_number(self) -> int:
        return self.blocks[0].number

    @property
    def solid_number(self) -> int:
        return self.head.number - self.solidify_depth

    def block(self, number: int) -> Block | None:
        index = number - self.blocks[0].number
        if 0 <= index < len(self.blocks):
            return self.blocks[index]
        return None

    def block_by_id(self, block_id: str) -> Block | None:
        try:
            number = int(block_id[:16], 16)
        except ValueError:
            return None
        block = self.block(number)
        return block if block is not None and block.block_id == block_id.lower() else None

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

    def submit_trc20(self, logs: tuple[LogSpec, ...], *, reverted: bool = False, internal: bool = False,
                     list_reverted: bool = True, caller_contract: str = "", noise: bool = False) -> str:
        """Queue a smart-contract call emitting ``logs``; its id is the hash of its raw data."""
        with self.lock:
            raw = self._raw(trc20_call(logs, internal, caller_contract), TRC20_FEE_LIMIT)
            tx = Tx(raw.tx_id(), "trc20", raw, logs, reverted=reverted, internal=internal,
                    list_reverted=list_reverted, owner=logs[0].from_address, caller_contract=caller_contract,
                    noise=noise)
            return self._submit(tx)

    def submit_built(self, tx: Tx) -> str:
        """Queue a transaction built elsewhere (its raw data, hence its id, already fixed: the sandbox network's)."""
        with self.lock:
            return self._submit(tx)

    def submit_trx(self, owner: str, to: str, amount: int) -> str:
        with self.lock:
            raw = self._raw(RawContract("TransferContract", owner, to, amount=amount), 0)
            tx = Tx(raw.tx_id(), "trx", raw, owner=owner, trx_to=to, trx_amount=amount)
            return self._submit(tx)

    def _raw(self, contract: RawContract, fee_limit: int) -> RawData:
        """Raw data referring to the current head; a strictly increasing timestamp keeps equal payments apart."""
        head = self.head
        self._tx_clock = max(self._tx_clock + 1, head.timestamp)
        ref_bytes, ref_hash = ref_block(head.number, head.block_id)
        return RawData(contract, ref_bytes, ref_hash, head.timestamp + TX_LIFETIME_MS, self._tx_clock, fee_limit)

    def _submit(self, tx: Tx) -> str:
        if tx.tx_id in self.txs:
            raise ValueError(f"transaction {tx.tx_id} already exists")
        if not tx.noise:
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

    def mine_at(self, timestamp: int) -> int:
        """Mine one block with this timestamp (after the head's), holding the queued transactions; its number."""
        with self.lock:
            if timestamp <= self.head.timestamp:
                raise ValueError("a block's timestamp must be after its parent's")
            self._mine_one(timestamp)
            return self.head.number

    def reorganize(self, depth: int, drop: tuple[str, ...] = ()) -> None:
        """A fork: the newest `depth` blocks (all above the solid head) are replaced by as many others, at the same
        times but with other ids; their transactions are in the new blocks again, except those of `drop`, which
        vanish (never solidify; the index forgets them)."""
        with self.lock:
            if not 0 < depth <= self.solidify_depth:
                raise ValueError("only blocks above the solid head can be replaced (0 < depth <= solidify depth)")
            dropped = {tx_id.lower() for tx_id in drop}
            self.forks += 1
            parent = self.blocks[-depth - 1].block_id
            for position in range(len(self.blocks) - depth, len(self.blocks)):
                old = self.blocks[position]
                block = Block(old.number, old.timestamp, parent, block_id_for(old.number, old.timestamp, self.forks))
                block.txs = [tx for tx in old.txs if tx.tx_id not in dropped]
                for index, tx in enumerate(block.txs):
                    tx.index_in_block = index
                for tx in old.txs:
                    if tx.tx_id in dropped:
                        tx.block_number = tx.block_timestamp = None
                        self.index.forget(tx.tx_id)
                self.blocks[position] = block
                parent = block.block_id

    def withhold(self, tx_id: str, withheld: bool = True) -> None:
        """No node gives this mined transaction's receipt (``{}`` by id, ``[]`` for its block) until released."""
        with self.lock:
            (self.withheld.add if withheld else self.withheld.discard)(tx_id.lower())

    def blocks_to_solidify(self) -> int:
        """How many blocks to mine so that every queued or mined tx a caller made is solidified."""
        with self.lock:
            if self.mempool:
                return self.solidify_depth + 1
            return max(0, self._last_user_block - self.solid_number)

    def _mine_one(self, timestamp: int | None = None) -> None:
        parent = self.head
        number = parent.number + 1
        if timestamp is None:
            timestamp = align_to_slot(parent.timestamp + self.slot_ms + self._pending_advance_ms, self.slot_ms)
            if self.follow_clock:
                timestamp = max(timestamp, align_to_slot(int(time.time() * 1000), self.slot_ms))
        self._pending_advance_ms = 0
        block = Block(number, timestamp, parent.block_id, block_id_for(number, timestamp))
        if self.mempool:
            self._last_user_block = number
        txs, self.mempool = self.mempool + self._noise_txs(), []
        self._place(block, txs)
        self.blocks.append(block)
        if len(block.txs) > self.usdt_noise_per_block:
            logger.debug("mined block %d with %d transactions", number, len(block.txs))

    def _place(self, block: Block, txs: list[Tx]) -> None:
        """Put `txs` into `block`, in this order, and index them."""
        block.txs = txs
        for position, tx in enumerate(txs):
            tx.block_number, tx.block_timestamp, tx.index_in_block = block.number, block.timestamp, position
            self.index.add(tx, self.token)
            tx.receipt = self.accounts.settle(tx, block.timestamp, self._energy(tx))
            self.ledger.apply(tx, block.number)

    def _energy(self, tx: Tx) -> Energy:
        """The energy a contract call uses (a TRX transfer uses none): a transfer to an address holding none of the
        token yet costs more; an ``approve`` is counted as a transfer to a holder."""
        if tx.reverted:
            return REVERTED_CALL
        new_holder = any(spec.event == "Transfer" and not self.ledger.balance(spec.contract, spec.to_address)
                         for spec in tx.logs)
        return TRANSFER_TO_NEW_HOLDER if new_holder else TRANSFER_TO_HOLDER

    def _noise_txs(self) -> list[Tx]:
        return [self.txs[self.submit_trc20((spec,), noise=True)] for spec in self.noise.transfers(self.usdt.address)]


def trc20_call(logs: tuple[LogSpec, ...], internal: bool = False, caller_contract: str = "") -> RawContract:
    """The smart-contract call that emits ``logs``: the token's ``transfer``/``approve``, or a batch contract's."""
    target = caller_contract if internal else logs[0].contract
    return RawContract("TriggerSmartContract", logs[0].from_address, target, data=_trc20_call_data(logs, internal))


def trc20_tx(spec: LogSpec, ref_number: int, ref_timestamp: int, tx_timestamp: int, *, reverted: bool = False) -> Tx:
    """A single-transfer transaction referring to block ``ref_number`` (time ``ref_timestamp``), built by its sender
    at ``tx_timestamp``: its id follows from these alone, so anyone holding them builds the same transaction."""
    ref_bytes, ref_hash = ref_block(ref_number, block_id_for(ref_number, ref_timestamp))
    raw = RawData(trc20_call((spec,)), ref_bytes, ref_hash, ref_timestamp + TX_LIFETIME_MS, tx_timestamp,
                  TRC20_FEE_LIMIT)
    return Tx(raw.tx_id(), "trc20", raw, (spec,), reverted=reverted, owner=spec.from_address)


def _trc20_call_data(logs: tuple[LogSpec, ...], internal: bool) -> str:
    if len(logs) == 1 and not internal:
        spec = logs[0]
        selector = APPROVE_SELECTOR if spec.event == "Approval" else TRANSFER_SELECTOR
        return call_data(selector, [(spec.to_address, spec.amount)])
    return call_data(MULTISEND_SELECTOR, [(spec.to_address, spec.amount) for spec in logs])


# -- index queries ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """One page of an index, already validated: timestamps inclusive, ``after`` the last key of the previous
    page (fingerprint)."""

    low_ts: int = 0
    high_ts: int | None = None
    descending: bool = True
    limit: int = 20
    after: RecordKey | None = None


def query_index(index: AddressIndex | None, window: Window, keep: Callable[[Record], bool]
                ) -> tuple[list[Record], bool]:
    """One page of records that ``keep`` accepts, and whether more follow. Block times strictly grow, so a
    timestamp range is a key range."""
    if index is None:
        return [], False
    start = bisect.bisect_left(index.keys, (window.low_ts,))
    end = len(index.keys) if window.high_ts is None else bisect.bisect_left(index.keys, (window.high_ts + 1,))
    if window.after is not None:
        if window.descending:
            end = min(end, bisect.bisect_left(index.keys, window.after))
        else:
            start = max(start, bisect.bisect_right(index.keys, window.after))
    positions = range(end - 1, start - 1, -1) if window.descending else range(start, end)
    page: list[Record] = []
    for position in positions:
        record = index.records[position]
        if not keep(record):
            continue
        if len(page) == window.limit:
            return page, True
        page.append(record)
    return page, False
