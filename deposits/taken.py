"""The deposit addresses taken by payments, and what reached each: the merchant's list of where money may be (the
API's GET /addresses, the CLI's report), late money included."""
from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from models import DepositAddress, Transfer, TransferStatus


def taken_query(received_only: bool = False) -> Select[Any]:
    """The addresses payments took (not those passed over), oldest first by id; with `received_only`, those some
    transfer reached (credited to the payment or not: money after the payment closed is unmatched, still seen)."""
    query = select(DepositAddress).where(DepositAddress.payment_id.is_not(None))
    if received_only:
        query = query.where(select(Transfer.id).where(Transfer.to_address == DepositAddress.address,
                                                      Transfer.status != TransferStatus.set_aside).exists())
    return query


def taken_by_a_payment(address: Any) -> Any:
    """SQL: whether `address` (a value or an SQL expression) is a deposit address a payment took: it serves that
    payment alone, so no other payment may be given it as its wallet_address."""
    return select(DepositAddress.id).where(DepositAddress.address == address,
                                           DepositAddress.payment_id.is_not(None)).exists()


def received_by(session: Session, addresses: Sequence[str]) -> dict[str, Decimal]:
    """The USDT every transfer seen to each address brought (0 for none); a transfer set aside as unreadable is not
    counted (what it brought is not read yet)."""
    totals = {address: Decimal(0) for address in addresses}
    if addresses:
        rows = session.execute(select(Transfer.to_address, func.sum(Transfer.amount_usdt))
                               .where(Transfer.to_address.in_(list(addresses)),
                                      Transfer.status != TransferStatus.set_aside).group_by(Transfer.to_address))
        totals.update({address: Decimal(total) for address, total in rows})
    return totals
