"""Request validation: exact JSON numbers, and one checker per input field."""
from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from addresses import AddressError, decode_address
from money import AmountError, parse_amount
from ssrf import CallbackUrlError, split_callback_url

MIN_EXPIRES = 60
MAX_EXPIRES = 2_592_000
MAX_METADATA_BYTES = 4096
MAX_ORDER_ID = 128
MAX_URL = 2048
CREATE_FIELDS = {
    "wallet_address", "expected_amount_usdt", "order_id", "callback_url",
    "expires_in_seconds", "metadata", "unique_amount",
}


class ValidationError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.status = code, message, field, status


class JsonNumber(str):
    """The exact text of a JSON number with a fraction or exponent (never a float)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(raw: bytes) -> Any:
    if not raw.strip():
        raise ValidationError("invalid_json", "The request body must be a JSON object.")
    try:
        return json.loads(raw, parse_float=JsonNumber, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("invalid_json", "The request body is not valid JSON.") from None


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("invalid_json", "The request body must be a JSON object.")
    return body


def wallet_address(value: Any, field: str = "wallet_address") -> str:
    if not isinstance(value, str):
        raise ValidationError("invalid_wallet_address", "wallet_address must be a TRON address string.", field)
    try:
        decode_address(value)
    except AddressError as exc:
        raise ValidationError(
            "invalid_wallet_address", f"wallet_address is not a valid TRON address: {exc}.", field
        ) from None
    return value


def amount(value: Any, field: str = "expected_amount_usdt") -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError("invalid_amount", f"{field} must be a decimal string such as \"10.5\".", field)
    try:
        return parse_amount(str(value))
    except AmountError as exc:
        raise ValidationError("invalid_amount", f"{field} {exc}.", field) from None


def order_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ORDER_ID or not value.isprintable():
        raise ValidationError(
            "invalid_order_id", f"order_id must be 1 to {MAX_ORDER_ID} printable characters.", "order_id"
        )
    return value


def callback_url(value: Any) -> str:
    """Syntax only (scheme, host, port, no spaces); where it points is checked by ssrf.py."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise ValidationError("invalid_callback_url", "callback_url must be an http or https URL.", "callback_url")
    try:
        split_callback_url(value)
    except CallbackUrlError as exc:
        raise ValidationError("invalid_callback_url", f"callback_url {exc}.", "callback_url") from None
    return value


def expires_in_seconds(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_EXPIRES <= value <= MAX_EXPIRES:
        raise ValidationError(
            "invalid_expires_in_seconds",
            f"expires_in_seconds must be a whole number from {MIN_EXPIRES} to {MAX_EXPIRES}.",
            "expires_in_seconds",
        )
    return value


def _plain(value: Any) -> Any:
    """JSON-ready copy of metadata. Metadata is opaque merchant data, never money, so a
    fractional number in it is stored as JSON stores it (a double), like any JSON API."""
    if isinstance(value, JsonNumber):
        number = float(value)
        if number in (float("inf"), float("-inf")):
            raise ValidationError("invalid_metadata", "metadata holds a number too large to store.", "metadata")
        return number
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError("invalid_metadata", "metadata must not contain NUL characters.", "metadata")
    if isinstance(value, dict):
        if any("\x00" in key for key in value):
            raise ValidationError("invalid_metadata", "metadata must not contain NUL characters.", "metadata")
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("invalid_metadata", "metadata must be a JSON object.", "metadata")
    encoded = json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise ValidationError("invalid_metadata", "metadata must be at most 4 KB of JSON.", "metadata")
    return json.loads(encoded)


def boolean(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError(f"invalid_{field}", f"{field} must be true or false.", field)
    return value


def filter_text(value: str | None, field: str) -> str | None:
    """A free-text query filter: printable, bounded (PostgreSQL refuses NUL characters)."""
    if value is None:
        return None
    if len(value) > MAX_ORDER_ID or not value.isprintable():
        raise ValidationError(f"invalid_{field}", f"{field} must be at most {MAX_ORDER_ID} printable characters.",
                              field)
    return value


def payment_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def limit(value: str | None) -> int:
    if value is None:
        return 50
    if not value.isdigit() or not 1 <= int(value) <= 200:
        raise ValidationError("invalid_limit", "limit must be a whole number from 1 to 200.", "limit")
    return int(value)


def one_of(value: str | None, allowed: tuple[str, ...], field: str) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise ValidationError(f"invalid_{field}", f"{field} must be one of: {', '.join(allowed)}.", field)
    return value
