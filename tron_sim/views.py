"""What one upstream sees of the shared chain: a pool of nodes some of which lag, and an index that lags.

TronGrid is a pool of load-balanced java-tron nodes plus an event index (TRON-US/trongrid issue 18: "nodes
behind their endpoints may not be 100% synchronized"). :class:`NodeLag` decides, per request, whether a node
``blocks`` behind answers it; :class:`NodeView` is the chain as that node sees it. :class:`IndexLag` is the
``/v1`` index: it lists a block's records only once the solid head is far enough past it, in chain time.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from tron_sim.chain import Block, Chain, Record, Tx


class NodeLag:
    """With probability ``fraction`` a request is answered by a node ``blocks`` behind (seeded, thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fraction = 0.0
        self.blocks = 0
        self._rng = random.Random()

    def set(self, fraction: float, blocks: int, seed: int | None = None) -> None:
        if isinstance(fraction, bool) or not 0.0 <= float(fraction) <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        if type(blocks) is not int or blocks < 0:
            raise ValueError("blocks must be a non-negative integer")
        with self._lock:
            self.fraction, self.blocks, self._rng = float(fraction), blocks, random.Random(seed)

    def draw(self) -> int:
        """How many blocks behind the node answering this request is."""
        with self._lock:
            if self.fraction <= 0.0 or self.blocks == 0:
                return 0
            return self.blocks if self._rng.random() < self.fraction else 0

    def state(self) -> dict[str, float | int]:
        with self._lock:
            return {"fraction": self.fraction, "blocks": self.blocks}


@dataclass(frozen=True)
class NodeView:
    """The chain as a node ``lag`` blocks behind sees it. Use under ``chain.lock``."""

    chain: Chain
    lag: int = 0

    @property
    def head_number(self) -> int:
        return max(self.chain.first_number, self.chain.head.number - self.lag)

    @property
    def solid_number(self) -> int:
        return max(self.chain.first_number, self.chain.solid_number - self.lag)

    def limit(self, solid: bool) -> int:
        return self.solid_number if solid else self.head_number

    def now_block(self, solid: bool) -> Block:
        block = self.chain.block(self.limit(solid))
        assert block is not None
        return block

    def block(self, number: int, solid: bool) -> Block | None:
        """The block, or None when this node (solid part, on /walletsolidity) has not reached it."""
        return self.chain.block(number) if number <= self.limit(solid) else None

    def block_by_id(self, block_id: str, solid: bool) -> Block | None:
        block = self.chain.block_by_id(block_id)
        return block if block is not None and block.number <= self.limit(solid) else None

    def tx(self, tx_id: str, solid: bool) -> Tx | None:
        """A mined transaction in a block this node has, or None."""
        tx = self.chain.txs.get(tx_id.lower())
        if tx is None or tx.block_number is None or tx.block_number > self.limit(solid):
            return None
        return tx


class IndexLag:
    """The ``/v1`` index's delay, in chain time: by default it lists every record at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lag_ms = 0
        self._delays: dict[str, int] = {}

    def set_lag(self, seconds: float) -> None:
        self.lag_ms = _milliseconds(seconds)

    def delay(self, tx_id: str, seconds: float) -> None:
        with self._lock:
            self._delays[tx_id.lower()] = _milliseconds(seconds)

    def cutoff(self, solid_timestamp: int) -> int | None:
        """The newest block timestamp the index lists, or None when it keeps up with the chain."""
        return solid_timestamp - self.lag_ms if self.lag_ms > 0 else None

    def lists(self, record: Record, solid_timestamp: int) -> bool:
        """Whether a record passed by :meth:`cutoff` is listed yet (out-of-order indexing of single txs)."""
        delay = self._delays.get(record.tx_id)
        return delay is None or solid_timestamp >= record.key[0] + delay

    def state(self) -> dict[str, object]:
        with self._lock:
            return {"lag_seconds": self.lag_ms / 1000, "delayed_transactions": len(self._delays)}


def _milliseconds(seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError("seconds must be a non-negative number")
    return round(seconds * 1000)
