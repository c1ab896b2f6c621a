"""Admin actions in the audit log (payment_logs), each naming the admin, in the transaction of the action."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from ledger.events import log_event
from models import PaymentLog


def record_action(session: Session, admin: str, action: str, message: str, payment_id: uuid.UUID | None = None,
                  **details: Any) -> PaymentLog:
    """`admin.<action>`: what the admin did, by name; tied to a payment when it concerns one."""
    return log_event(session, payment_id, f"admin.{action}", f"{message} (by admin {admin})", admin=admin, **details)
