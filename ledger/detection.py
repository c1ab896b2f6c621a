"""Money seen before it is final: USDT transfers in blocks above the solid head (contract §4, `DETECT_UNCONFIRMED`).

Such a transfer is matched by the same rules as a credit (`matching.choose_payment`), only to say which payment it
is *for*: it is listed on that payment as unconfirmed and announced once with `payment.detected`. It credits
nothing, expires nothing, moves no cursor and changes no status: only its solidified, successful transfer does,
through `matching.credit_transfer`, which clears it. A transfer whose block is replaced (a fork), or that the chain
was read past without (it never solidified), is cleared too and simply leaves the payment's list. Money that no
payment would take is not listed (the solidified transfer is stored and announced as unmatched, as ever).
"""
from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from infra.money import format_amount, from_micro
from infra.times import ms_to_datetime
from ledger.events import emit_event, log_event
from ledger.matching import choose_payment, is_stored, unstorable
from ledger.records import TransferLog
from models import DETECTED_EVENT, NOT_SOLIDIFIED, REPLACED, UnconfirmedTransfer, WalletCursor

logger = logging.getLogger(__name__)

def note_unconfirmed(session: Session, t: TransferLog, block_id: str, late_window: int) -> uuid.UUID | None:
    """List a transfer seen above the solid head on the payment the rules would give it to, and announce it with
    `payment.detected` the first time it is seen; the payment's id when this call announced it, else None. Seen
    again (the next cycle, or in another block after a fork), it is only moved to its block: never announced twice.
    The caller owns the transaction."""
    if unstorable(t) is not None or is_stored(session, t):
        return None  # spam or out of range; or solidified and stored already
    known = session.scalars(select(UnconfirmedTransfer).where(
        UnconfirmedTransfer.transaction_hash == t.transaction_hash,
        UnconfirmedTransfer.log_index == t.log_index)).one_or_none()
    if known is not None:
        if known.block_id != block_id:  # the same transfer in another block (re-included after a fork)
            known.block_number, known.block_id, known.block_timestamp = t.block_number, block_id, t.block_timestamp
            known.cleared_at = known.cleared_reason = None
        return None
    choice = choose_payment(session, t.to_address, ms_to_datetime(t.block_timestamp), t.amount, late_window)
    payment = choice.payment
    if payment is None:
        return None
    inserted = session.execute(insert(UnconfirmedTransfer).values(
        transaction_hash=t.transaction_hash, log_index=t.log_index, payment_id=payment.id,
        from_address=t.from_address, to_address=t.to_address, amount_usdt=from_micro(t.amount),
        block_number=t.block_number, block_id=block_id, block_timestamp=t.block_timestamp,
    ).on_conflict_do_nothing(constraint="uq_unconfirmed_tx_log").returning(UnconfirmedTransfer.id)).scalar()
    if inserted is None:
        return None
    log_event(session, payment.id, "detected",
              f"{format_amount(t.amount)} USDT from {t.from_address} in {t.transaction_hash}:{t.log_index} seen in "
              f"block {t.block_number}, not solidified yet: nothing credited", transaction_hash=t.transaction_hash,
              log_index=t.log_index, amount_usdt=format_amount(t.amount), block_number=t.block_number)
    emit_event(session, payment, DETECTED_EVENT)
    return payment.id


def clear_replaced(session: Session, block_number: int, block_id: str) -> int:
    """Block `block_number` is now `block_id`: what was seen in another block of that number leaves its payment's
    list (it comes back if the new chain holds it too). How many left."""
    rows = session.execute(update(UnconfirmedTransfer).where(
        UnconfirmedTransfer.block_number == block_number, UnconfirmedTransfer.block_id != block_id,
        UnconfirmedTransfer.cleared_at.is_(None)).values(cleared_at=func.now(), cleared_reason=REPLACED)
        .returning(UnconfirmedTransfer.payment_id, UnconfirmedTransfer.transaction_hash,
                   UnconfirmedTransfer.log_index)).all()
    for payment_id, tx_hash, log_index in rows:
        log_event(session, payment_id, "detection_dropped",
                  f"transfer {tx_hash}:{log_index} left: its block {block_number} was replaced (a fork); it counts "
                  "only if a solidified block holds it", transaction_hash=tx_hash, log_index=log_index,
                  block_number=block_number)
    return len(rows)


def clear_read_past(session: Session, chain_key: str, block_number: int | None = None) -> int:
    """What the solidified chain was read past without being credited never solidified: it leaves its payment's
    list. Read past: its block number is at most `block_number` (the blocks strategy's cursor), or else its
    wallet's cursor passed its block time (the account strategy). How many left."""
    if block_number is not None:
        passed = UnconfirmedTransfer.block_number <= block_number
    else:
        passed = select(WalletCursor.chain).where(
            WalletCursor.chain == chain_key, WalletCursor.wallet_address == UnconfirmedTransfer.to_address,
            WalletCursor.last_checked_timestamp >= UnconfirmedTransfer.block_timestamp).exists()
    rows = session.execute(update(UnconfirmedTransfer).where(UnconfirmedTransfer.cleared_at.is_(None), passed)
                           .values(cleared_at=func.now(), cleared_reason=NOT_SOLIDIFIED)
                           .returning(UnconfirmedTransfer.payment_id, UnconfirmedTransfer.transaction_hash,
                                      UnconfirmedTransfer.log_index)).all()
    for payment_id, tx_hash, log_index in rows:
        log_event(session, payment_id, "detection_dropped",
                  f"transfer {tx_hash}:{log_index} left: the solidified chain was read past it without it",
                  transaction_hash=tx_hash, log_index=log_index)
    return len(rows)
