"""The sandbox chain (TRON_NETWORK=sandbox): one simulated TRON chain per database, whatever the number of processes
serving it. What defines it lives in PostgreSQL, so every process serves the same chain (sandbox/node.py):

* its schedule (service_state ``sandbox_chain``): block N's time follows from a segment's first block, that
  block's time and the block interval, so every process knows the head at any moment by the database's clock. A
  new segment starts at the next block when SANDBOX_BLOCK_SECONDS changes; the blocks before keep their times.
* its transactions (``sandbox_transfers``): a transfer is stored with its transaction id fixed at once (built from
  the head it refers to and the time it was sent, ``transaction_of``), waiting for its block.
* its blocks: whoever first needs a block whose time has come seals it, under the schedule row's lock: each
  waiting transfer gets the first block after the one it was sent at that is not sealed yet, and ``sealed`` moves
  up to the head. A sealed block never changes; a transfer committed after a seal goes into a later block.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from infra.config import Config
from infra.money import to_micro
from infra.times import db_now, to_ms
from ledger.service_state import insert_state, read_state, write_state
from models import SandboxTransfer
from tron_sim.chain import FIRST_BLOCK, LogSpec, Tx, random_address, trc20_tx

logger = logging.getLogger(__name__)

STATE_KEY = "sandbox_chain"
TOKENS = ("usdt", "fake")  # the sandbox's USDT, or a token that calls itself USDT at another contract
_SEED = random.SystemRandom()


@dataclass(frozen=True)
class Segment:
    number: int  # its first block
    timestamp: int  # that block's time, ms
    block_ms: int


@dataclass(frozen=True)
class Schedule:
    """When each block of the sandbox chain is due, and how far it is sealed."""

    segments: tuple[Segment, ...]
    sealed: int

    @property
    def block_ms(self) -> int:
        return self.segments[-1].block_ms

    @property
    def start(self) -> Segment:
        return self.segments[0]

    def timestamp(self, number: int) -> int:
        segment = next((s for s in reversed(self.segments) if s.number <= number), self.start)
        return segment.timestamp + (number - segment.number) * segment.block_ms

    def height_at(self, ms: int) -> int:
        """The newest block due at ``ms`` (the head, by that clock)."""
        for index in range(len(self.segments) - 1, -1, -1):
            segment = self.segments[index]
            if segment.timestamp <= ms or index == 0:
                height = segment.number + (ms - segment.timestamp) // segment.block_ms
                if index + 1 < len(self.segments):
                    height = min(height, self.segments[index + 1].number - 1)
                return height
        raise AssertionError("a schedule has at least one segment")

    def to_json(self) -> dict[str, Any]:
        return {"segments": [[s.number, s.timestamp, s.block_ms] for s in self.segments], "sealed": self.sealed}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Schedule:
        return cls(tuple(Segment(*map(int, s)) for s in value["segments"]), int(value["sealed"]))


def block_ms(config: Config) -> int:
    return max(1, round(config.sandbox_block_seconds * 1000))


def genesis(now_ms: int, interval_ms: int) -> Schedule:
    """A new chain whose head is due now (on a boundary of its interval, as TRON's blocks are on 3 s ones)."""
    start = Segment(FIRST_BLOCK, now_ms // interval_ms * interval_ms, interval_ms)
    return Schedule((start,), FIRST_BLOCK)


def load_schedule(session: Session, *, for_update: bool = False) -> Schedule | None:
    value = read_state(session, STATE_KEY, for_update=for_update)
    return Schedule.from_json(value) if value else None


def current_schedule(session: Session, config: Config) -> Schedule:
    """The schedule with every block due by now sealed (the chain made first if there is none): the caller's
    transaction commits it. Without a block to seal this only reads; otherwise it waits for the row's lock."""
    interval = block_ms(config)
    now_ms = to_ms(db_now(session))
    schedule = load_schedule(session)
    if schedule is not None and schedule.block_ms == interval and schedule.height_at(now_ms) <= schedule.sealed:
        return schedule
    if schedule is None and insert_state(session, STATE_KEY, genesis(now_ms, interval).to_json()):
        logger.info("sandbox chain started: a block every %g s", interval / 1000)
    schedule = load_schedule(session, for_update=True)
    assert schedule is not None
    head = max(schedule.sealed, schedule.height_at(now_ms))
    if head > schedule.sealed:
        seal(session, schedule, head)
    segments = schedule.segments
    if schedule.block_ms != interval:
        segments += (Segment(head + 1, schedule.timestamp(head) + interval, interval),)
        logger.info("sandbox chain: a block every %g s from block %d on (SANDBOX_BLOCK_SECONDS)", interval / 1000,
                    head + 1)
    schedule = Schedule(segments, head)
    write_state(session, STATE_KEY, schedule.to_json())
    return schedule


def seal(session: Session, schedule: Schedule, head: int) -> None:
    """Give each waiting transfer its block, up to ``head``: the first after the one it was sent at, and never one
    that was sealed before (the caller holds the schedule's lock)."""
    waiting = session.execute(
        select(SandboxTransfer.id, SandboxTransfer.sent_at_ms).where(SandboxTransfer.block_number.is_(None))
        .order_by(SandboxTransfer.id)
    ).all()
    for row_id, sent_at_ms in waiting:
        number = max(schedule.sealed + 1, schedule.height_at(sent_at_ms) + 1)
        if number <= head:
            session.execute(update(SandboxTransfer).where(SandboxTransfer.id == row_id).values(block_number=number))


def sealed_transfers(session: Session, after: int, upto: int) -> list[SandboxTransfer]:
    """The transfers of blocks ``after`` + 1 to ``upto``, in chain order."""
    return list(session.scalars(
        select(SandboxTransfer)
        .where(SandboxTransfer.block_number > after, SandboxTransfer.block_number <= upto)
        .order_by(SandboxTransfer.block_number, SandboxTransfer.id)
    ))


def transaction_of(row: SandboxTransfer) -> Tx:
    """The chain's transaction for a stored transfer: the same in every process, so is its id."""
    spec = LogSpec(row.contract, row.from_address, row.to_address, to_micro(row.amount_usdt))
    return trc20_tx(spec, row.ref_block, row.ref_timestamp, row.sent_at_ms, reverted=row.reverted)


def send_transfer(session: Session, config: Config, to: str, amount: Decimal, *, token: str = "usdt",
                  reverted: bool = False) -> SandboxTransfer:
    """Send a transfer on the sandbox chain from a random address: stored with its transaction id, mined into the
    next block (solidified SANDBOX_SOLIDIFY_BLOCKS later). ``token`` ``fake``: a contract that is not the USDT."""
    schedule = current_schedule(session, config)
    now_ms = to_ms(db_now(session))
    ref = max(schedule.sealed, schedule.height_at(now_ms))
    contract = config.usdt_contract if token == "usdt" else random_address(_SEED)
    row = SandboxTransfer(from_address=random_address(_SEED), to_address=to, contract=contract, amount_usdt=amount,
                          reverted=reverted, ref_block=ref, ref_timestamp=schedule.timestamp(ref), sent_at_ms=now_ms)
    row.transaction_hash = transaction_of(row).tx_id
    session.add(row)
    session.flush()
    logger.info("sandbox: sent %s %s to %s%s", amount, token, to, " (reverted)" if reverted else "",
                extra={"tx": row.transaction_hash})
    return row
