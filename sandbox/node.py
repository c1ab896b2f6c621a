"""This process's TronGrid for the sandbox chain: a replica of the database's chain (sandbox/chain.py) in memory,
served on a loopback port by the simulator's own TronGrid and java-tron endpoints (tron_sim), so the watcher reads
it through the same client and strategies as TronGrid, over HTTP.

Before each answer the replica catches up with the database: it seals what is due (sandbox.chain.current_schedule)
and mines the sealed blocks it lacks, each at its scheduled time, with its stored transfers in their order and one
USDT transfer between the chain's own addresses (as on mainnet, where USDT moves in every block; the account
strategy's watermark moves with it). That background traffic is seeded by the chain's start, so every process
builds the same blocks with the same transaction ids. The simulator's ``/_sim`` controls are not served: the chain
changes only through the database (the /sandbox routes).
"""
from __future__ import annotations

import logging
import random
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from database import Database, DatabaseError
from infra.config import Config, first_line
from sandbox.chain import Schedule, current_schedule, sealed_transfers, transaction_of
from tron_sim.chain import Chain, Tx, random_address
from tron_sim.server import Reply
from tron_sim.simulator import Simulator

logger = logging.getLogger(__name__)

NOISE_PER_BLOCK = 1


def new_chain(schedule: Schedule, config: Config) -> Chain:
    start = schedule.start
    return Chain(config.usdt_contract, config.sandbox_solidify_blocks, start.timestamp, first_block=start.number,
                 usdt_noise_per_block=NOISE_PER_BLOCK, seed=start.timestamp, slot_ms=start.block_ms)


class SandboxNode(Simulator):
    """The simulator's HTTP server over this process's replica of the sandbox chain."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db, self.config = db, config
        self._catching_up = threading.Lock()
        with db.transaction() as session:
            schedule = current_schedule(session, config)
        super().__init__(chain=new_chain(schedule, config))
        self.genesis = schedule.start
        self.front.witness = random_address(random.Random(schedule.start.timestamp))  # the same in every process
        self.catch_up()

    def catch_up(self) -> None:
        """Mine the blocks the database has sealed and this replica lacks (sealing what is due first)."""
        with self._catching_up:
            with self.db.transaction() as session:
                schedule = current_schedule(session, self.config)
                if schedule.start != self.genesis:  # the database's chain was started anew (db_manager.py reset)
                    logger.warning("sandbox chain started anew in the database: this process follows it")
                    self.genesis, self.chain = schedule.start, new_chain(schedule, self.config)
                    self.front.chain = self.chain
                head = self.chain.head.number
                by_block: dict[int, list[Tx]] = {}
                for row in sealed_transfers(session, head, schedule.sealed):
                    by_block.setdefault(row.block_number, []).append(transaction_of(row))  # type: ignore[arg-type]
            with self.chain.lock:
                for number in range(head + 1, schedule.sealed + 1):
                    for tx in by_block.get(number, ()):
                        self.chain.submit_built(tx)
                    self.chain.mine_at(schedule.timestamp(number))

    def stop(self, timeout: float = 10.0) -> None:
        super().stop()

    def handle(self, method: str, path: str, params: dict[str, str], body: Any, base_url: str,
               api_key: str | None) -> Reply:
        if path.startswith("/_sim/"):
            return Reply(404, b'{"Error": "the sandbox chain changes through the service\'s /sandbox routes"}')
        try:
            self.catch_up()
        except (SQLAlchemyError, DatabaseError) as exc:
            logger.warning("sandbox chain unavailable: %s", first_line(exc))
            return Reply(503, b'{"Error": "sandbox chain unavailable: the database did not answer"}')
        return super().handle(method, path, params, body, base_url, api_key)


def with_sandbox_upstream(db: Database, config: Config) -> tuple[Config, SandboxNode | None]:
    """On the sandbox network: this process's node, started on a loopback port, and the configuration whose
    upstream it is. On any other network: the configuration as it is, and no node."""
    if not config.is_sandbox:
        return config, None
    node = SandboxNode(db, config)
    url = node.start("127.0.0.1", 0)
    logger.info("sandbox network: this process serves the sandbox chain to its watcher on %s", url)
    return config.with_overrides(trongrid_api_url=url), node
