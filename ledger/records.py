"""Typed records the money core takes and gives: what a chain reader hands it (a transfer read from a log, or a log
that cannot be one), and a payment and its transfers as the two hot paths read them without the ORM (a create,
`ledger.payments.create_payment`; a read of one payment, `web.schemas.payment_by_id`)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from models import PaymentStatus, TransferStatus


@dataclass(frozen=True)
class TransferLog:
    """One ``Transfer`` log of the configured USDT contract, read from a transaction's receipt."""

    transaction_hash: str
    log_index: int  # position in the tx info's ``log`` list
    from_address: str
    to_address: str
    amount: int  # micro-USDT
    block_number: int
    block_timestamp: int  # ms


@dataclass(frozen=True)
class RejectedLog:
    """A log of the USDT contract with the Transfer topic that cannot be read as a transfer, and why."""

    transaction_hash: str
    log_index: int
    reason: str
    to_address: str | None
    amount_raw: str | None
    block_number: int
    block_timestamp: int


class TransferRecord(NamedTuple):
    """A credited transfer as its payment's answer shows it."""

    transaction_hash: str
    log_index: int
    from_address: str
    to_address: str
    amount_usdt: Decimal
    block_number: int
    block_timestamp: int  # ms
    status: TransferStatus
    payment_id: uuid.UUID | None
    reason: str | None


class UnconfirmedRecord(NamedTuple):
    """A transfer seen above the solid head, as its payment's answer lists it."""

    transaction_hash: str
    log_index: int
    amount_usdt: Decimal
    block_number: int

    @classmethod
    def of(cls, item: list[Any]) -> UnconfirmedRecord:
        """The record of a JSON list of its fields, in order (the amount as a decimal string)."""
        return cls(str(item[0]), int(item[1]), Decimal(str(item[2])), int(item[3]))


class PaymentRecord(NamedTuple):
    """A payment as its answer shows it (and nothing it does not show)."""

    id: uuid.UUID
    order_id: str
    wallet_address: str
    expected_amount_usdt: Decimal
    received_amount_usdt: Decimal
    status: PaymentStatus
    failure_reason: str | None
    transaction_hash: str | None
    created_at: datetime
    expires_at: datetime
    completed_at: datetime | None
    callback_url: str
    callback_attempts: int
    callback_success: bool
    paid_late: bool
    meta: Any
    return_url: str | None
    underpayment_tolerance_usdt: Decimal
    price_amount: Decimal | None
    price_currency: str | None
    rate: Decimal | None
    rate_source: str | None
    rate_at: datetime | None
    address_index: int | None  # its address's index when derived from DEPOSIT_XPUB

    @classmethod
    def of(cls, values: dict[str, Any]) -> PaymentRecord:
        """The record of a row's values by attribute name (more may be given: they are not shown)."""
        return cls(*(values[name] for name in cls._fields))
