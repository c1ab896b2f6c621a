"""I already paid: a payer's transaction hash, checked on chain at once, then read by the watcher in chain order.

The check reads the transaction's receipt from the solidity API (so it is solidified when found) and tells the payer
what it is: a successful USDT transfer to the payment's wallet, mined at or after the payment's creation, or why it
does not count. Nothing is credited here: a found transaction becomes a request in service_state (`wallet_claims`)
that the watcher serves at the start of its next cycle, which it is woken for, reading the wallet up to that block
through its normal path (`scanning.AccountScan.read_claimed`), so earlier money and expiry come first as always.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from chain.answers import TronError
from infra.money import format_amount, from_micro
from infra.times import to_ms
from ledger.service_state import insert_state, read_state, write_state
from models import Payment
from tron_client import TronClient

logger = logging.getLogger(__name__)

WALLET_CLAIMS = "wallet_claims"  # service_state: {wallet: {"block_timestamp": ms, "transaction_hash": str}}
TX_HASH = re.compile(r"^(?:0x)?([0-9a-fA-F]{64})$")
CLAIMS_PER_MINUTE = 5
# Per client address, over every token: one address pressing "I already paid" on page after page. Generous, since a
# shop's customers may share one address (a carrier's NAT).
CLAIMS_PER_ADDRESS_PER_MINUTE = 30
# A claim waits for the upstream (up to TRONGRID_TIMEOUT_SECONDS while it is stalled) on one of the process's few
# request threads: at most this many do so at once, and another claim waits at most CLAIM_QUEUE_SECONDS for its
# turn before it answers "unavailable" (the page says to try again), so a stalled upstream never holds the API.
CLAIMS_IN_FLIGHT = 1
CLAIM_QUEUE_SECONDS = 1.0

# What a claim finds: "found" (credited by the watcher shortly), "not_solidified" (try again shortly), or why not.
FOUND = "found"
NOT_SOLIDIFIED = "not_solidified"
REASONS = ("failed", "not_usdt", "other_wallet", "before_payment", "unavailable")


@dataclass(frozen=True)
class ClaimResult:
    outcome: str  # FOUND, NOT_SOLIDIFIED or one of REASONS
    transaction_hash: str
    amount_usdt: str | None = None  # the USDT the transaction sent to the wallet, when found
    block_timestamp: int | None = None  # chain time (ms) of its block, when found

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.outcome, "transaction_hash": self.transaction_hash, "amount_usdt": self.amount_usdt}


def parse_tx_hash(value: Any) -> str | None:
    """A transaction hash as a payer may paste it (64 hex digits, 0x allowed, spaces around), lower-cased; or None."""
    if not isinstance(value, str):
        return None
    match = TX_HASH.match(value.strip())
    return match.group(1).lower() if match else None


def claims_in_flight() -> threading.BoundedSemaphore:
    """The turns of one process's claims at the upstream (`CLAIMS_IN_FLIGHT`); the process's Services holds it."""
    return threading.BoundedSemaphore(CLAIMS_IN_FLIGHT)


def check_transaction(client: TronClient, payment: Payment, tx_hash: str, turns: threading.BoundedSemaphore
                      ) -> ClaimResult:
    """What the solidified chain says of `tx_hash` for this payment: one receipt request, taking one of the
    process's `turns` (`claims_in_flight`)."""
    if not turns.acquire(timeout=CLAIM_QUEUE_SECONDS):
        logger.warning("claim of %s: another claim is still waiting for the upstream", tx_hash, extra={"tx": tx_hash})
        return ClaimResult("unavailable", tx_hash)
    try:
        info = client.get_transaction_info(tx_hash)
    except TronError as exc:
        logger.warning("claim of %s: the upstream did not answer: %s", tx_hash, exc, extra={"tx": tx_hash})
        return ClaimResult("unavailable", tx_hash)
    finally:
        turns.release()
    if info is None:
        return ClaimResult(NOT_SOLIDIFIED, tx_hash)
    if not info.success:
        return ClaimResult("failed", tx_hash)
    if not info.transfers:
        return ClaimResult("not_usdt", tx_hash)
    to_wallet = [log for log in info.transfers if log.to_address == payment.wallet_address]
    if not to_wallet:
        return ClaimResult("other_wallet", tx_hash)
    if info.block_timestamp < to_ms(payment.created_at):
        return ClaimResult("before_payment", tx_hash)
    amount = format_amount(from_micro(sum(log.amount for log in to_wallet)))
    return ClaimResult(FOUND, tx_hash, amount, info.block_timestamp)


def request_read(session: Session, wallet: str, tx_hash: str, block_timestamp: int) -> None:
    """Ask the watcher to read `wallet` up to `block_timestamp` (the furthest asked for wins)."""
    insert_state(session, WALLET_CLAIMS, {})  # a row to lock, even for the very first claims, made at once
    claims = dict(read_state(session, WALLET_CLAIMS, for_update=True) or {})
    current = claims.get(wallet)
    if current is None or int(current["block_timestamp"]) < block_timestamp:
        claims[wallet] = {"block_timestamp": block_timestamp, "transaction_hash": tx_hash}
        write_state(session, WALLET_CLAIMS, claims)


def take_requests(session: Session) -> dict[str, dict[str, Any]]:
    """The reads asked for, removed (the caller's transaction commits their removal)."""
    claims = read_state(session, WALLET_CLAIMS, for_update=True) or {}
    if claims:
        write_state(session, WALLET_CLAIMS, {})
    return dict(claims)


class ClaimLimiter:
    """At most `per_minute` claims per key (a checkout token, a client address) in a sliding minute, in this
    process."""

    def __init__(self, per_minute: int = CLAIMS_PER_MINUTE, clock: Any = time.monotonic) -> None:
        self.per_minute, self.clock = per_minute, clock
        self.recent: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def allow(self, token: str) -> float | None:
        """None if this claim may go ahead (and it is counted); else the seconds until one may. `token`: the key."""
        now = self.clock()
        with self.lock:
            if len(self.recent) > 10_000:  # forget tokens idle for a minute
                self.recent = {t: q for t, q in self.recent.items() if q and now - q[-1] < 60}
            times = self.recent.setdefault(token, deque())
            while times and now - times[0] >= 60:
                times.popleft()
            if len(times) >= self.per_minute:
                return 60 - (now - times[0])
            times.append(now)
            return None
