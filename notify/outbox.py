"""The notifications' outbox: written in the caller's transaction, so a notification commits with the event it
reports, or not at all; claimed with a lease by the dispatcher (`notify.dispatcher`).

Which events become notifications, to which targets and in which language is this process's configuration, carried
by its database's sessions (`with_notifications`, set by the composition roots) as the checkout links are: the
money core writes a notification without knowing the settings. A session without them writes none.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Text, all_, bindparam, cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from database import Database
from infra.config import Config
from infra.notify_targets import NotifyTarget
from models import EventState, Notification
from notify.messages import dashboard_link, render

logger = logging.getLogger(__name__)

SETTINGS = "notify_settings"  # the sessions' info key


@dataclass(frozen=True)
class NotifySettings:
    targets: tuple[NotifyTarget, ...]
    events: frozenset[str]
    language: str
    public_base_url: str = ""  # where a message's link to the payment's dashboard page points

    @classmethod
    def of(cls, config: Config) -> NotifySettings:
        return cls(config.notify_targets, config.notify_events, config.notify_language, config.public_base_url)

    def wants(self, event_type: str) -> bool:
        return bool(self.targets) and event_type in self.events

    def target(self, fingerprint: str) -> NotifyTarget | None:
        return next((t for t in self.targets if t.fingerprint == fingerprint), None)


def with_notifications(db: Database, config: Config) -> Database:
    """`db` (its engine and pool) with sessions that write the notifications `config` asks for."""
    return db.with_session_info(**{SETTINGS: NotifySettings.of(config)})


def settings_of(session: Session) -> NotifySettings | None:
    return session.info.get(SETTINGS)


# --- writing ---------------------------------------------------------------------------------------

def queue_notification(session: Session, event_type: str, facts: dict[str, Any],
                       payment_id: uuid.UUID | None = None) -> list[Notification]:
    """One pending notification per target for `event_type`, when NOTIFY_EVENTS names it; in the caller's
    transaction. `facts`: what the message may say (notify.messages)."""
    settings = settings_of(session)
    if settings is None or not settings.wants(event_type):
        return []
    if payment_id is not None and settings.public_base_url:  # the operator's page of it: the dashboard's
        facts = {**facts, "link": dashboard_link(settings.public_base_url, payment_id)}
    title, body = render(event_type, facts, settings.language)
    rows = [new_row(event_type, target, title, body, payment_id) for target in settings.targets]
    session.add_all(rows)
    logger.info("notification %s queued for %d target(s) (payment %s)", event_type, len(rows), payment_id)
    return rows


def new_row(event_type: str, target: NotifyTarget, title: str, body: str,
            payment_id: uuid.UUID | None = None) -> Notification:
    return Notification(id=f"ntf_{uuid.uuid4().hex}", event_type=event_type, payment_id=payment_id,
                        target=target.fingerprint, scheme=target.scheme, title=title, body=body,
                        state=EventState.pending, next_attempt_at=func.now())


# --- claiming and recording ------------------------------------------------------------------------

DUE = (
    select(Notification.seq)
    .where(
        Notification.state == EventState.pending,
        Notification.next_attempt_at <= func.now(),
        or_(Notification.lease_until.is_(None), Notification.lease_until < func.now()),
        Notification.target != all_(cast(bindparam("busy"), ARRAY(Text))),
        Notification.seq != all_(cast(bindparam("exclude"), ARRAY(BigInteger))),
    )
    .order_by(Notification.next_attempt_at, Notification.seq)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
    .cte("due")
)
CLAIM = (
    update(Notification)
    .where(Notification.seq == DUE.c.seq)
    .values(lease_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lease")),
            leased_by=bindparam("worker"))
    .returning(Notification.seq, Notification.id, Notification.event_type, Notification.target,
               Notification.scheme, Notification.title, Notification.body)
    .execution_options(synchronize_session=False)
)


def claim_due(session: Session, limit: int, lease_seconds: float, token: str, busy: Sequence[str] = (),
              exclude: Sequence[int] = ()) -> list[Row[Any]]:
    """Lease up to `limit` due notifications to `token`, none for a target (fingerprint) in `busy` nor in `exclude`
    (sequence numbers)."""
    return list(session.execute(CLAIM, {"limit": limit, "lease": lease_seconds, "worker": token,
                                        "busy": list(busy), "exclude": list(exclude)}).all())


def release(session: Session, seqs: Sequence[int], token: str) -> None:
    session.execute(update(Notification).where(Notification.seq.in_(list(seqs)), Notification.leased_by == token)
                    .values(lease_until=None, leased_by=None).execution_options(synchronize_session=False))


def leased(session: Session, seq: int, token: str) -> Notification | None:
    """The notification, locked, if `token` still holds its lease."""
    return session.scalars(select(Notification).where(Notification.seq == seq, Notification.leased_by == token)
                           .with_for_update()).one_or_none()


def apply_attempt(row: Notification, ok: bool, error: str | None, delay: float | None, now: datetime) -> None:
    """One attempt's outcome; `delay`: seconds to the next attempt, None when the schedule is exhausted."""
    row.attempts += 1
    row.lease_until, row.leased_by = None, None
    row.last_error = error
    if ok:
        row.state, row.delivered_at = EventState.delivered, now
    elif delay is None:
        row.state = EventState.failed
    else:
        row.next_attempt_at = now + timedelta(seconds=delay)
