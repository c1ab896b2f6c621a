"""The sandbox's built-in webhook receiver (``POST /sandbox/inbox``), so trying the service needs no second program:
it takes a delivery only when its Standard Webhooks signature verifies with one of the service's own signing secrets
(checked by the official library, as a merchant's code would), keeps the newest KEEP, and lists them.

Callbacks to it are on this machine, which the callback address checks refuse: on the sandbox network the service's
own inbox URL (``own_inbox_urls``) is allowed, at creation and at delivery; every other URL follows the usual rules.
"""
from __future__ import annotations

import binascii
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from delivery.signing import get_signing_secrets
from infra.config import Config, url_host
from infra.ssrf import PrivateCallbacks
from models import SandboxDelivery

logger = logging.getLogger(__name__)

INBOX_PATH = "/sandbox/inbox"
KEEP = 1000  # deliveries kept; older ones are dropped as new ones arrive
MAX_ID = 64
MAX_TYPE = 32
ANY_ADDRESS = ("0.0.0.0", "::", "")


class InvalidSignature(ValueError):
    """A delivery whose signature does not verify with any of the service's secrets."""


def own_inbox_urls(config: Config) -> set[str]:
    """Where the service's own inbox is reached: its HOST and PORT (127.0.0.1 and localhost when it listens on
    every address), and its PUBLIC_BASE_URL."""
    hosts = {"127.0.0.1", "localhost"} if config.host in ANY_ADDRESS else {config.host}
    urls = {f"http://{url_host(h)}:{config.port}{INBOX_PATH}" for h in hosts}
    return urls | {config.public_base_url.rstrip("/") + INBOX_PATH}


def private_callbacks(config: Config) -> PrivateCallbacks:
    """The callbacks allowed to reach this machine: ALLOW_PRIVATE_CALLBACKS's, and on the sandbox network the
    service's own inbox. The composition roots (app.py, watcher.py) hand this to the API and the dispatcher."""
    own = frozenset(own_inbox_urls(config)) if config.is_sandbox else frozenset()
    return PrivateCallbacks(config.allow_private_callbacks, own)


def verify(session: Session, config: Config, body: bytes, headers: Mapping[str, str]) -> Any:
    """The delivery's JSON if its signature verifies with a secret the service signs with (current or previous),
    within the library's 5 minutes of its timestamp; else InvalidSignature."""
    wanted = {name: headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    for secret in get_signing_secrets(session, config):
        try:
            return Webhook(secret).verify(body, wanted)
        except (WebhookVerificationError, ValueError, binascii.Error):
            continue
    raise InvalidSignature("the webhook-signature does not verify with this service's signing secret")


def _payment_id(event: Any) -> uuid.UUID | None:
    data = event.get("data") if isinstance(event, dict) else None
    try:
        return uuid.UUID(str(data.get("id"))) if isinstance(data, dict) else None
    except ValueError:
        return None


def store(session: Session, headers: Mapping[str, str], event: Any) -> SandboxDelivery:
    """Keep a verified delivery (and only the newest KEEP)."""
    kind = event.get("type") if isinstance(event, dict) else None
    delivery = SandboxDelivery(webhook_id=headers.get("webhook-id", "")[:MAX_ID],
                               type=str(kind or "")[:MAX_TYPE], payment_id=_payment_id(event),
                               webhook_timestamp=int(headers.get("webhook-timestamp", "0")),
                               body=json.dumps(event, separators=(",", ":")))
    session.add(delivery)
    session.flush()
    newest = session.scalar(select(func.max(SandboxDelivery.id)))
    session.execute(delete(SandboxDelivery).where(SandboxDelivery.id <= newest - KEEP))
    logger.info("sandbox inbox: %s %s arrived, signature verified", delivery.type, delivery.webhook_id,
                extra={"payment": delivery.payment_id})
    return delivery
