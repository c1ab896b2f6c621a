"""Standard Webhooks signing (https://www.standardwebhooks.com): the secrets, where they are kept, their rotation,
and the signature header (made by the official ``standardwebhooks`` library).

Secrets (service_state key ``webhook_secrets``)
  * ``WEBHOOK_SECRET`` unset: a secret is generated once, stored, and used by every process.
  * ``WEBHOOK_SECRET`` set: it is the signing secret. ``rotate-webhook-secret`` still works: the
    new secret is stored in the database together with a fingerprint of the environment secret
    it replaced, and wins while WEBHOOK_SECRET keeps that value; the environment secret is then
    the previous one. Setting WEBHOOK_SECRET to a different value later makes the environment
    authoritative again, at once and alone (no overlap): that is an explicit operator decision.
  * After a rotation the previous secret keeps signing for ``PREVIOUS_SECRET_TTL`` (24 h), so
    every request carries two signatures (current first) until it expires or is dropped.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from database import Database
from infra.config import SECRET_PREFIX, Config
from infra.times import db_now, iso, parse_iso
from ledger.service_state import insert_state, read_state, write_state

logger = logging.getLogger(__name__)

def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_header(secrets_in_use: list[str], msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` for each secret in
    use, space-separated (two while a rotation overlaps), made by the official library."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return " ".join(Webhook(secret).sign(msg_id, when, body) for secret in secrets_in_use)


# --- where the secrets are kept, and their rotation ----------------------------------------------

SECRETS_KEY = "webhook_secrets"
PREVIOUS_SECRET_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class SecretSet:
    current: str
    previous: str | None
    previous_expires_at: datetime | None
    source: str  # "environment" or "database"

    def signing(self) -> list[str]:
        return [self.current] + ([self.previous] if self.previous else [])


def secret_fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _load_state(session: Session, *, for_update: bool = False) -> dict[str, Any] | None:
    value = read_state(session, SECRETS_KEY, for_update=for_update)
    return dict(value) if value else None


def _fresh_state(secret: str, now: datetime) -> dict[str, Any]:
    return {"current": secret, "previous": None, "previous_expires_at": None, "env_fingerprint": None,
            "created_at": iso(now), "rotated_at": None}


def _active_secrets(state: dict[str, Any] | None, env_secret: str | None, now: datetime) -> SecretSet | None:
    """The secrets in force: the environment's unless a rotation superseded that exact value."""
    if env_secret and not (state and state.get("env_fingerprint") == secret_fingerprint(env_secret)):
        return SecretSet(env_secret, None, None, "environment")
    if state is None:
        return None
    previous, expires = state.get("previous"), parse_iso(state.get("previous_expires_at"))
    if previous and expires is not None and expires <= now:
        previous = None
    return SecretSet(state["current"], previous, expires if previous else None, "database")


def _secret_set(session: Session, config: Config) -> SecretSet:
    now = db_now(session)
    active = _active_secrets(_load_state(session), config.webhook_secret, now)
    if active is None:
        if insert_state(session, SECRETS_KEY, _fresh_state(generate_secret(), now)):
            logger.info("generated and stored a new webhook signing secret")
        active = _active_secrets(_load_state(session), config.webhook_secret, now)
    if active is None:  # pragma: no cover - the row was just inserted or already there
        raise RuntimeError("no webhook signing secret could be stored or read")
    return active


def get_signing_secrets(session: Session, config: Config) -> list[str]:
    """The secrets to sign with, current first (two while a rotation overlaps)."""
    return _secret_set(session, config).signing()


def ensure_webhook_secret(db: Database, config: Config) -> str | None:
    """Generate and store the secret when none is configured or stored; the new secret, else None.

    Safe when several processes start at once: exactly one INSERT wins, the others read it.
    """
    if config.webhook_secret:
        return None
    secret = generate_secret()
    with db.transaction() as session:
        created = insert_state(session, SECRETS_KEY, _fresh_state(secret, db_now(session)))
    if created:
        logger.info("generated and stored the webhook signing secret")
    return secret if created else None


def describe_webhook_secrets(session: Session, config: Config) -> dict[str, Any]:
    """What `db_manager.py show-webhook-secret` prints."""
    active = _secret_set(session, config)
    state = _load_state(session) or {}
    return {
        "current": active.current,
        "source": active.source,
        "previous": active.previous,
        "previous_expires_at": iso(active.previous_expires_at),
        "rotated_at": state.get("rotated_at") if active.source == "database" else None,
        "environment_secret_set": bool(config.webhook_secret),
        "environment_secret_superseded": bool(config.webhook_secret) and active.source == "database",
    }


def rotate_webhook_secret(session: Session, config: Config) -> str:
    """Make a new current secret; the one in force so far stays valid as previous for 24 h."""
    now = db_now(session)
    state = _load_state(session, for_update=True)
    active = _active_secrets(state, config.webhook_secret, now)
    new_secret = generate_secret()
    env = config.webhook_secret
    write_state(session, SECRETS_KEY, {
        "current": new_secret,
        "previous": active.current if active else None,
        "previous_expires_at": iso(now + PREVIOUS_SECRET_TTL) if active else None,
        "env_fingerprint": secret_fingerprint(env) if env else None,
        "created_at": (state or {}).get("created_at") or iso(now),
        "rotated_at": iso(now),
    })
    logger.info("webhook signing secret rotated; the previous one stays valid until %s",
                iso(now + PREVIOUS_SECRET_TTL))
    return new_secret


def drop_previous_webhook_secret(session: Session) -> bool:
    """Stop signing with the previous secret now; True if there was one."""
    state = _load_state(session, for_update=True)
    if not state or not state.get("previous"):
        return False
    write_state(session, SECRETS_KEY, {**state, "previous": None, "previous_expires_at": None})
    logger.info("previous webhook signing secret dropped")
    return True

