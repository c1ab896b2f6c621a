"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets and signatures."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24


class SecretError(ValueError):
    """A webhook secret is malformed."""


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError("must start with 'whsec_' followed by base64")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("must be 'whsec_' followed by valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise SecretError(f"must hold at least {MIN_SECRET_BYTES} bytes of key")
    return key


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``."""
    to_sign = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(parse_secret(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_in_use: list[str], msg_id: str, timestamp: int, body: str) -> str:
    """Space-separated signatures, one per active secret (two while rotating)."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_in_use)
