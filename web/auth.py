"""API keys: generated once, stored only as SHA-256, revocable."""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from models import ApiKey

logger = logging.getLogger(__name__)

KEY_PREFIX = "tum_"
PREFIX_LENGTH = 12
BOOTSTRAP_LOCK_ID = 0x7472_6F6E_0002


class ApiKeyError(Exception):
    """An API key operation cannot be done; the message is meant for a person."""


@dataclass(frozen=True)
class CreatedKey:
    key: str
    prefix: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_api_key(session: Session, name: str | None = None) -> CreatedKey:
    key = generate_key()
    prefix = key[:PREFIX_LENGTH]
    session.add(ApiKey(prefix=prefix, key_hash=hash_key(key), name=name))
    session.flush()
    logger.info("API key %s created", prefix)
    return CreatedKey(key=key, prefix=prefix)


def revoke_api_key(session: Session, prefix: str) -> None:
    """Revoke the active keys starting with `prefix`; refuses an ambiguous or unknown prefix."""
    if len(prefix) < 6:
        raise ApiKeyError("give at least the first 6 characters of the key (as printed by create-api-key)")
    keys = session.scalars(
        select(ApiKey).where(ApiKey.prefix.startswith(prefix[:PREFIX_LENGTH]), ApiKey.revoked_at.is_(None))
    ).all()
    keys = [k for k in keys if prefix.startswith(k.prefix) or k.prefix.startswith(prefix)]
    if not keys:
        raise ApiKeyError(f"no active API key starts with {prefix!r}")
    if len(keys) > 1:
        raise ApiKeyError(f"{len(keys)} active keys start with {prefix!r}; give more characters")
    keys[0].revoked_at = datetime.now(UTC)
    logger.info("API key %s revoked", keys[0].prefix)


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def is_valid_key(session: Session, presented: str, configured: tuple[str, ...]) -> bool:
    if any(hmac.compare_digest(presented.encode(), k.encode()) for k in configured):
        return True
    digest = hash_key(presented)
    found = session.scalar(
        select(func.count()).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    )
    return bool(found)


class KeyCache:
    """Remembers accepted keys (by hash) for `ttl` seconds, so most requests skip the key lookup.

    Only acceptances are cached: a revoked key stops working within `ttl` seconds in every process.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._accepted: dict[str, float] = {}
        self._lock = threading.Lock()

    def is_valid(self, session_factory: Callable[[], Session], presented: str, configured: tuple[str, ...]) -> bool:
        digest = hash_key(presented)
        now = time.monotonic()
        with self._lock:
            if self._accepted.get(digest, 0.0) > now:
                return True
        with session_factory() as session:
            valid = is_valid_key(session, presented, configured)
        if valid and self.ttl > 0:
            with self._lock:
                if len(self._accepted) > 10_000:  # bounded: keys are few, garbage is not stored
                    self._accepted.clear()
                self._accepted[digest] = now + self.ttl
        return valid


def ensure_initial_key(session: Session, configured: tuple[str, ...]) -> CreatedKey | None:
    """With no key configured at all, create one (once, across processes) and return it to print."""
    if configured:
        return None
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": BOOTSTRAP_LOCK_ID})
    if session.scalar(select(func.count()).select_from(ApiKey)):
        return None
    return create_api_key(session, name="initial")
