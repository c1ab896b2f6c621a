"""What the API answers with and webhooks carry: payments, their transfers, audit log rows and webhook events as
JSON objects. Money is a plain decimal string, times are ISO 8601 in UTC."""
from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import EventState, Payment, PaymentLog, Transfer, WebhookEvent
from money import format_amount
from times import iso, iso_ms


def transfer_to_dict(transfer: Transfer) -> dict[str, Any]:
    return {
        "transaction_hash": transfer.transaction_hash,
        "log_index": transfer.log_index,
        "from": transfer.from_address,
        "to": transfer.to_address,
        "amount_usdt": format_amount(transfer.amount_usdt),
        "block_number": transfer.block_number,
        "block_timestamp": iso_ms(transfer.block_timestamp),
        "status": transfer.status.value,
        "payment_id": str(transfer.payment_id) if transfer.payment_id else None,
    }


def credited_transfers(session: Session, payment_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Transfer]]:
    result: dict[uuid.UUID, list[Transfer]] = {pid: [] for pid in payment_ids}
    if not payment_ids:
        return result
    rows = session.scalars(
        select(Transfer).where(Transfer.payment_id.in_(payment_ids)).order_by(Transfer.block_timestamp, Transfer.id)
    )
    for row in rows:
        result[row.payment_id].append(row)  # type: ignore[index]
    return result


def payment_to_dict(payment: Payment, transfers: list[Transfer]) -> dict[str, Any]:
    return {
        "id": str(payment.id),
        "order_id": payment.order_id,
        "wallet_address": payment.wallet_address,
        "expected_amount_usdt": format_amount(payment.expected_amount_usdt),
        "received_amount_usdt": format_amount(payment.received_amount_usdt),
        "status": payment.status.value,
        "failure_reason": payment.failure_reason,
        "transaction_hash": payment.transaction_hash,
        "transfers": [transfer_to_dict(t) for t in transfers],
        "created_at": iso(payment.created_at),
        "expires_at": iso(payment.expires_at),
        "completed_at": iso(payment.completed_at),
        "callback_url": payment.callback_url,
        "callback_attempts": payment.callback_attempts,
        "callback_success": payment.callback_success,
        "paid_late": payment.paid_late,
        "metadata": payment.meta,
    }


def serialize_payments(session: Session, payments: list[Payment]) -> list[dict[str, Any]]:
    transfers = credited_transfers(session, [p.id for p in payments])
    return [payment_to_dict(p, transfers[p.id]) for p in payments]


def serialize_payment(session: Session, payment: Payment) -> dict[str, Any]:
    return serialize_payments(session, [payment])[0]



def log_to_dict(entry: PaymentLog) -> dict[str, Any]:
    return {
        "id": entry.id,
        "event_type": entry.event_type,
        "message": entry.message,
        "metadata": entry.event_metadata,
        "created_at": iso(entry.created_at),
    }



def event_to_dict(event: WebhookEvent) -> dict[str, Any]:
    pending = event.state == EventState.pending
    return {
        "id": event.id,
        "type": event.type,
        "payment_id": str(event.payment_id),
        "created_at": iso(event.created_at),
        "state": event.state.value,
        "attempts": event.attempts,
        "next_attempt_at": iso(event.next_attempt_at) if pending else None,
        "last_status_code": event.last_status_code,
        "last_error": event.last_error,
        "delivered_at": iso(event.delivered_at),
        "data": json.loads(event.body).get("data"),
    }

