"""Server-side dashboard sessions. The cookie holds a random token; the database only its SHA-256, with the
session's CSRF token: logout, a new password and deleting the admin end sessions at once, in every process. A
session unused for IDLE_SECONDS is over."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models import Admin, AdminSession

IDLE_SECONDS = 12 * 3600
# last_seen_at is written at most this often: a page view rarely writes.
TOUCH_SECONDS = 60


@dataclass(frozen=True)
class Current:
    """The session a request carries."""

    token_hash: str
    admin_id: int
    admin_name: str
    csrf_token: str
    verified: bool
    totp_enabled: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, admin: Admin, *, verified: bool) -> str:
    """A new session of the admin; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    session.add(AdminSession(token_hash=token_hash(token), admin_id=admin.id, csrf_token=secrets.token_urlsafe(32),
                             verified=verified))
    session.execute(delete(AdminSession).where(  # the admin's own sessions that ran out
        AdminSession.admin_id == admin.id, AdminSession.last_seen_at < func.now() - timedelta(seconds=IDLE_SECONDS)))
    session.flush()
    return token


def current(session: Session, token: str | None) -> Current | None:
    """The live session of a cookie's token (its idle time renewed), or None."""
    if not token or len(token) > 128:
        return None
    row = session.execute(
        select(AdminSession, Admin.name, Admin.totp_enabled).join(Admin, Admin.id == AdminSession.admin_id)
        .where(AdminSession.token_hash == token_hash(token),
               AdminSession.last_seen_at > func.now() - timedelta(seconds=IDLE_SECONDS))
    ).one_or_none()
    if row is None:
        return None
    stored, name, totp_enabled = row
    session.execute(update(AdminSession).where(
        AdminSession.token_hash == stored.token_hash,
        AdminSession.last_seen_at < func.now() - timedelta(seconds=TOUCH_SECONDS)).values(last_seen_at=func.now()))
    return Current(stored.token_hash, stored.admin_id, name, stored.csrf_token, stored.verified, totp_enabled)


def mark_verified(session: Session, token: str) -> str:
    """The second factor shown: the session is replaced by a verified one (a new token, so the half-open one's
    token opens nothing). Returns the new token."""
    old = session.get(AdminSession, token_hash(token))
    if old is None:
        raise LookupError("the session is over")
    admin = session.get(Admin, old.admin_id)
    session.delete(old)
    session.flush()
    return open_session(session, admin, verified=True)  # type: ignore[arg-type]


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(AdminSession).where(AdminSession.token_hash == token_hash(token)))


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
