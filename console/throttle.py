"""Failed dashboard logins: MAX_FAILURES a minute per name and per address, then refused (429) until the minute
has passed. Counted in the database, so every process (gunicorn workers, hosts) agrees."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.orm import Session

from models import LoginFailure

MAX_FAILURES = 5
WINDOW = timedelta(minutes=1)
KEPT = timedelta(hours=1)  # older rows are deleted as new ones come
LOCK_SPACE = 0x6164  # the first key of the throttle's advisory locks (two-int form)


def take_turn(session: Session, name: str, address: str) -> None:
    """Attempts for one name, or from one address, are checked one at a time (transaction-level advisory locks,
    the name's first, so two attempts never wait on each other crosswise): a burst cannot slip past the count."""
    for key in (f"name:{name[:64]}", f"address:{address[:64]}"):
        session.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"), {"space": LOCK_SPACE, "key": key})


def failures(session: Session, name: str, address: str) -> int:
    """The larger of the failures of this name and of this address within the last minute."""
    recent = LoginFailure.failed_at > func.now() - WINDOW
    by_name = session.scalar(select(func.count()).where(LoginFailure.name == name[:64], recent)) or 0
    by_address = session.scalar(select(func.count()).where(LoginFailure.address == address[:64], recent)) or 0
    return max(by_name, by_address)


def is_blocked(session: Session, name: str, address: str) -> bool:
    return failures(session, name, address) >= MAX_FAILURES


def record_failure(session: Session, name: str, address: str) -> bool:
    """Count a failure; True when it reaches the limit (this answer is a 429 already)."""
    session.execute(delete(LoginFailure).where(LoginFailure.failed_at < func.now() - KEPT,
                                               or_(LoginFailure.name == name[:64],
                                                   LoginFailure.address == address[:64])))
    session.add(LoginFailure(name=name[:64], address=address[:64]))
    session.flush()
    return is_blocked(session, name, address)
