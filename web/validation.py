"""Request validation: strict JSON bodies (UTF-8, exact numbers, no repeated keys, bounded
nesting), one checker per input field, and the table of each request's fields: the checks that read
them and the JSON Schema /openapi.json states for them, side by side, so the two cannot drift."""
from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from typing import Any

from werkzeug.http import parse_options_header

from infra.addresses import AddressError, decode_address
from infra.money import MAX_MICRO, MICRO, AmountError, parse_amount
from infra.urls import CallbackUrlError, split_callback_url
from web.errors import ApiError

MAX_BODY_BYTES = 64 * 1024  # a request body, checked before anything else
BODY_TOO_LARGE = f"The request body must be at most {MAX_BODY_BYTES // 1024} KB."
MIN_EXPIRES = 60
MAX_EXPIRES = 2_592_000
MAX_METADATA_BYTES = 4096
MAX_ORDER_ID = 128
MAX_URL = 2048
# Deeper bodies are refused before they are parsed, so no recursion can run out of stack;
# metadata, stored and sent back in webhooks, gets a tighter bound.
MAX_JSON_DEPTH = 64
MAX_METADATA_DEPTH = 32
# A positive amount with at most 6 decimals and 14 integer digits (NUMERIC(20,6)), written plainly:
# no sign, exponent, spaces or leading zeros ("0.5" has its one zero). Lookahead-free, so every
# JSON Schema validator reads it alike.
AMOUNT_PATTERN = (
    r"^(?:[1-9][0-9]{0,13}(?:\.[0-9]{1,6})?"
    r"|0\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}|0000[1-9][0-9]?|00000[1-9]))$"
)
# What a TRON address looks like (base58, 34 characters from T); its checksum is checked besides.
ADDRESS_PATTERN = r"^T[1-9A-HJ-NP-Za-km-z]{33}$"
# No whitespace at either end; "printable" (no control or format characters) is checked besides.
ORDER_ID_PATTERN = r"^\S(?:.*\S)?$"
# What every accepted callback URL looks like; the rest (a host the URL parser accepts, port
# 1-65535, public addresses) is checked by infra/ssrf.py and stated in words in /openapi.json.
CALLBACK_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20\x7f/?#@\\]+(?:[/?#][^\x00-\x20\x7f\\]*)?$"
# A tolerance: an amount as above, or zero ("0", "0.0"...).
TOLERANCE_PATTERN = r"^(?:0(?:\.0{1,6})?|" + AMOUNT_PATTERN[1:-1] + r")$"
CURRENCY_PATTERN = r"^[A-Za-z]{3}$"  # three ASCII letters; ISO 4217 is checked besides
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
MAX_BIGINT = 2**63 - 1
_AMOUNT = re.compile(AMOUNT_PATTERN[1:-1])
_TOLERANCE = re.compile(TOLERANCE_PATTERN[1:-1])
_UUID = re.compile(UUID_PATTERN[1:-1])
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonNumber(str):
    """The exact text of a JSON number with a fraction or exponent (never a float)."""


def is_text(value: Any) -> bool:
    """A JSON string (a JSON number's text is kept as a JsonNumber, which is no string to a client)."""
    return isinstance(value, str) and not isinstance(value, JsonNumber)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of the body; a key given twice is refused (json would silently keep the last)."""
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ApiError("invalid_json", f"The request body repeats the key {_shown(key)}; "
                                           "each key may appear once in an object.")
        seen.add(key)
    return obj


def _shown(key: str) -> str:
    return json.dumps(key[:40] + ("..." if len(key) > 40 else ""))


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub('""', text))
    return max(accumulate(1 if ch in "[{" else -1 for ch in brackets), default=0)


def lone_surrogate_field(value: Any) -> tuple[bool, str | None]:
    """(whether a string or key anywhere in `value` holds a lone UTF-16 surrogate, the top-level key)."""
    stack: list[tuple[Any, str | None]] = [(value, None)]
    while stack:
        item, top = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True, top
        elif isinstance(item, dict):
            for key, child in item.items():
                where = top if top is not None else key
                if _SURROGATE.search(key):
                    return True, where
                stack.append((child, where))
        elif isinstance(item, list):
            stack.extend((child, top) for child in item)
    return False, None


def parse_json_body(raw: bytes) -> Any:
    """A request body as JSON: UTF-8, nested at most MAX_JSON_DEPTH deep, no repeated keys, no
    NaN/Infinity, real Unicode text only; numbers with a fraction or exponent as JsonNumber."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError("invalid_json", "The request body must be JSON encoded as UTF-8.") from None
    if not text.strip():
        raise ApiError("invalid_json", "The request body must be a JSON object.")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ApiError("invalid_json", f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        value = json.loads(text, parse_float=JsonNumber, parse_constant=_reject_constant,
                           object_pairs_hook=_unique_keys)
    except ValueError:
        raise ApiError("invalid_json", "The request body is not valid JSON.") from None
    found, field = lone_surrogate_field(value)
    if found:
        raise ApiError("invalid_json", "The request body holds a lone UTF-16 surrogate escape "
                                              "(such as \\ud800), which is not text.", field)
    return value


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json`, with parameters allowed but no charset other than UTF-8."""
    mimetype, params = parse_options_header(content_type or "")
    charset = params.get("charset")
    return mimetype.lower() == "application/json" and (charset is None or charset.lower() in ("utf-8", "utf8"))


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("invalid_json", "The request body must be a JSON object.")
    return body


def wallet_address(value: Any, field: str = "wallet_address") -> str:
    if not is_text(value):
        raise ApiError("invalid_wallet_address", f"{field} must be a TRON address string.", field)
    try:
        decode_address(value)
    except AddressError as exc:
        raise ApiError(
            "invalid_wallet_address", f"{field} is not a valid TRON address: {exc}.", field
        ) from None
    return value


def amount(value: Any, field: str = "expected_amount_usdt", *, zero_allowed: bool = False) -> Decimal:
    """A string or an exact JSON number; the text must be plain (see AMOUNT_PATTERN, or TOLERANCE_PATTERN when
    zero is allowed)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ApiError("invalid_amount", f"{field} must be a decimal string such as \"10.5\".", field)
    text = str(value)
    try:
        parsed = parse_amount(text, zero_allowed=zero_allowed)
    except AmountError as exc:
        raise ApiError("invalid_amount", f"{field} {exc}.", field) from None
    if not (_TOLERANCE if zero_allowed else _AMOUNT).fullmatch(text):
        raise ApiError(
            "invalid_amount",
            f"{field} must be written plainly, without spaces or leading zeros (\"0.5\" and \"10\", not \"010\").",
            field,
        )
    return parsed


def currency(value: Any, field: str) -> str | None:
    """Three ASCII letters, upper-cased (whether it is ISO 4217 and priced here is the rates' question)."""
    if value is None:
        return None
    if not is_text(value) or not re.fullmatch(CURRENCY_PATTERN, value):
        raise ApiError(f"invalid_{field}", f"{field} must be an ISO 4217 code of three letters, such as \"CNY\".",
                       field)
    return value.upper()


def order_id(value: Any) -> str:
    if (not is_text(value) or not 1 <= len(value) <= MAX_ORDER_ID or not value.isprintable()
            or value != value.strip()):
        raise ApiError(
            "invalid_order_id",
            f"order_id must be 1 to {MAX_ORDER_ID} printable characters, not starting or ending with a space.",
            "order_id",
        )
    return value


def http_url(value: Any, field: str) -> str:
    """An http or https URL by syntax only (scheme, host, port, no user information or spaces), read as the
    webhook sender reads one; a 400 `invalid_<field>` otherwise."""
    if not is_text(value) or len(value) > MAX_URL:
        raise ApiError(f"invalid_{field}", f"{field} must be an http or https URL.", field)
    try:
        split_callback_url(value)
    except CallbackUrlError as exc:
        raise ApiError(f"invalid_{field}", f"{field} {exc}.", field) from None
    return value


def callback_url(value: Any, field: str = "callback_url") -> str:
    """Syntax only; where it points is checked by infra/ssrf.py."""
    return http_url(value, field)


def return_url(value: Any) -> str | None:
    """Syntax only: it is the payer's browser that goes there, so where it points is not checked."""
    return None if value is None else http_url(value, "return_url")


def underpayment_tolerance(value: Any) -> Decimal | None:
    """The tolerance asked for, or None when none was (the configured default then applies)."""
    return None if value is None else amount(value, "underpayment_tolerance_usdt", zero_allowed=True)


def whole_number(value: Any) -> int | None:
    """A JSON number with a whole value (600, 600.0 and 6e2 alike, as JSON Schema's "integer"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, JsonNumber):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    # adjusted() bounds the size first: int(Decimal("1e999999999")) would take forever.
    if not number.is_finite() or number.adjusted() > 18 or number != number.to_integral_value():
        return None
    return int(number)


def expires_in_seconds(value: Any) -> int | None:
    """The lifetime asked for, or None when none was (the configured default then applies)."""
    if value is None:
        return None
    number = whole_number(value)
    if number is None or not MIN_EXPIRES <= number <= MAX_EXPIRES:
        raise ApiError(
            "invalid_expires_in_seconds",
            f"expires_in_seconds must be a whole number from {MIN_EXPIRES} to {MAX_EXPIRES}.",
            "expires_in_seconds",
        )
    return number


def _plain(value: Any, depth: int = 1) -> Any:
    """JSON-ready copy of metadata. Metadata is opaque merchant data, never money, so a
    fractional number in it is stored as JSON stores it (a double), like any JSON API."""
    if isinstance(value, JsonNumber):
        number = float(value)
        if number in (float("inf"), float("-inf")):
            raise ApiError("invalid_metadata", "metadata holds a number too large to store.", "metadata")
        return number
    if isinstance(value, str) and "\x00" in value:
        raise ApiError("invalid_metadata", "metadata must not contain NUL characters.", "metadata")
    if isinstance(value, (dict, list)) and depth > MAX_METADATA_DEPTH:
        raise ApiError("invalid_metadata", f"metadata nests deeper than {MAX_METADATA_DEPTH} levels.", "metadata")
    if isinstance(value, dict):
        if any("\x00" in key for key in value):
            raise ApiError("invalid_metadata", "metadata must not contain NUL characters.", "metadata")
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    return value


def stored_length(value: Any) -> int:
    """Bytes of metadata (as `_plain` made it) once PostgreSQL's JSONB has it: a number comes back in plain
    notation, so 1e308 is 309 digits. Every answer and webhook body shows it so: this, not the request's text, is
    what the size limit bounds."""
    if isinstance(value, dict):
        return 2 + max(0, len(value) - 1) + sum(len(json.dumps(k, ensure_ascii=False).encode()) + 1 + stored_length(v)
                                                for k, v in value.items())
    if isinstance(value, list):
        return 2 + max(0, len(value) - 1) + sum(stored_length(v) for v in value)
    if isinstance(value, float):
        return max(len(repr(value)), len(format(Decimal(repr(value)), "f")))
    return len(json.dumps(value, ensure_ascii=False).encode())


def metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError("invalid_metadata", "metadata must be a JSON object.", "metadata")
    plain = _plain(value)
    encoded = json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
    if max(len(encoded.encode()), stored_length(plain)) > MAX_METADATA_BYTES:
        raise ApiError("invalid_metadata", f"metadata must be at most {MAX_METADATA_BYTES // 1024} KB of JSON.",
                       "metadata")
    return json.loads(encoded)


def boolean(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(f"invalid_{field}", f"{field} must be true or false.", field)
    return value


def filter_text(value: str | None, field: str) -> str | None:
    """A free-text query filter: printable, bounded (PostgreSQL refuses NUL characters)."""
    if value is None:
        return None
    if len(value) > MAX_ORDER_ID or not value.isprintable():
        raise ApiError(f"invalid_{field}", f"{field} must be at most {MAX_ORDER_ID} printable characters.", field)
    return value


def payment_uuid(value: str) -> uuid.UUID | None:
    """The UUID in its one written form (8-4-4-4-12 hex digits), as /openapi.json states it."""
    if not _UUID.fullmatch(value):
        return None
    return uuid.UUID(value)


def event_id(value: str) -> str | None:
    """An event id as /events lists it could be (at most 64 printable characters), else None (PostgreSQL refuses
    NUL characters, and no longer id exists)."""
    return value if len(value) <= 64 and value.isprintable() else None


def ascii_number(value: str, maximum: int) -> int | None:
    """`value` as a whole number if it is ASCII digits only and at most `maximum`, else None.
    ("²".isdigit() is true and int() refuses it; a thousand digits are refused before int())."""
    if not value.isascii() or not value.isdigit() or len(value) > len(str(maximum)):
        return None
    number = int(value)
    return number if number <= maximum else None


def one_of(value: str | None, allowed: tuple[str, ...], field: str) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise ApiError(f"invalid_{field}", f"{field} must be one of: {', '.join(allowed)}.", field)
    return value


# --- the inputs of each request, with what /openapi.json states for them ---------------------------

PRINTABLE = "printable characters only (no control, format, private-use, surrogate or unassigned characters)"
UUID_SCHEMA = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}


@dataclass(frozen=True)
class Field:
    """One input of a request: its name, the JSON Schema /openapi.json states for it, and the check that reads it
    (raising ApiError; it is given None when the input is absent)."""

    name: str
    schema: dict[str, Any]
    check: Callable[[Any], Any]
    required: bool = False
    description: str = ""  # for a query parameter: what it does (a body field says it in its schema)


def read_fields(fields: tuple[Field, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Each field's value as its check reads it, checked in the table's order."""
    return {f.name: f.check(given.get(f.name)) for f in fields}


def read_body(fields: tuple[Field, ...], body: dict[str, Any]) -> dict[str, Any]:
    """A JSON object's fields: none unknown, every required one there, each checked."""
    unknown = sorted(set(body) - {f.name for f in fields})
    if unknown:
        raise ApiError("unknown_field", f"Unknown field {unknown[0]!r}; see /openapi.json.", unknown[0])
    for f in fields:
        if f.required and f.name not in body:
            raise ApiError("missing_field", f"{f.name} is required.", f.name)
        if f.name in body and body[f.name] is None:  # the document declares no field nullable
            raise ApiError("null_value", f"{f.name} must not be null: leave it out to use its default."
                           if not f.required else f"{f.name} is required and must not be null.", f.name)
    return read_fields(fields, body)


def enum_field(name: str, values: type[enum.Enum], description: str) -> Field:
    """A query parameter that is one of an enum's values; read as the enum's member."""
    allowed = tuple(member.value for member in values)

    def check(value: str | None) -> enum.Enum | None:
        return None if one_of(value, allowed, name) is None else values(value)

    # The document names the enumeration after its class (schemas.ENUMS): one type in a generated client.
    return Field(name, {"$ref": f"#/components/schemas/{values.__name__}"}, check, description=description)


def filter_field(name: str, description: str) -> Field:
    """A free-text query filter (see `filter_text`)."""
    schema = {"type": "string", "maxLength": MAX_ORDER_ID, "description": f"{PRINTABLE}; empty means no filter"}
    return Field(name, schema, lambda value: filter_text(value, name), description=description)


def body_schema(fields: tuple[Field, ...], description: str) -> dict[str, Any]:
    """The JSON Schema of a body made of `fields` and nothing else."""
    return {"type": "object", "description": description,
            "required": [f.name for f in fields if f.required], "additionalProperties": False,
            "properties": {f.name: f.schema for f in fields}}


# A JSON number for an amount: read exactly from its digits, so at most 6 decimals and never an exponent, which is
# how most JSON libraries write 0.00001 (1e-05) or 0.1 + 0.2 (0.30000000000000004). The schema marks the number
# form deprecated (a generator then prefers the string) and says the rule on it; a float `multipleOf: 0.000001` would
# say it too, but common validators (Python's jsonschema, ajv) compute 1.1 / 0.000001 in floating point and refuse
# 1.1, which the service accepts.
NUMBER_WORDS = ("A JSON number is accepted only as plain digits with at most 6 decimals (10.5); one written with an "
                "exponent (1e-05) or more decimals (0.30000000000000004, what most JSON libraries write for "
                "0.1 + 0.2) is a 400, so prefer a string.")
AMOUNT_SCHEMA = {
    "oneOf": [
        {"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["10.5"]},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": (MAX_MICRO + 1) // MICRO,
         "deprecated": True, "description": NUMBER_WORDS},
    ],
    "description": (
        "USDT, greater than 0, at most 6 decimals and 14 integer digits: send it as a string (\"10.5\"). A string "
        "is written plainly: no sign, exponent, spaces or leading zeros (\"0.5\" has its one zero). " + NUMBER_WORDS
    ),
}
ADDRESS_SCHEMA = {
    "type": "string", "pattern": ADDRESS_PATTERN, "examples": ["TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"],
    "description": "A TRON address in base58check; its checksum must match and it must start with the 0x41 byte.",
}
CALLBACK_URL_SCHEMA = {
    "type": "string", "maxLength": MAX_URL, "pattern": CALLBACK_URL_PATTERN,
    "description": ("An http or https URL without user information, backslashes, spaces or control characters, "
                    "whose host the URL parser accepts, with a port from 1 to 65535; the host must resolve, and "
                    "every address it resolves to must be public (not loopback, private, link-local, "
                    "unique-local, multicast or reserved)."),
}
CREATE_PAYMENT = (
    Field("wallet_address", {
        **ADDRESS_SCHEMA,
        "description": (ADDRESS_SCHEMA["description"] + " Where the payer sends the money. May be left out when the "
                        "service derives deposit addresses (DEPOSIT_XPUB): the payment then gets a fresh address of "
                        "its own (address_index says which); without DEPOSIT_XPUB it is required (a 400)."),
    }, lambda value: None if value is None else wallet_address(value)),
    Field("expected_amount_usdt", AMOUNT_SCHEMA, lambda value: None if value is None else amount(value)),
    Field("order_id", {
        "type": "string", "minLength": 1, "maxLength": MAX_ORDER_ID, "pattern": ORDER_ID_PATTERN,
        "description": (f"Your order reference, unique: {PRINTABLE}, no whitespace at either end. The same order_id "
                        "with the same body replays (200); with another body it is a 409 order_id_conflict; the "
                        "order_id of an archived payment is a 409 archived."),
    }, order_id, required=True),
    Field("callback_url", CALLBACK_URL_SCHEMA, callback_url, required=True),
    Field("expires_in_seconds", {"type": "integer", "minimum": MIN_EXPIRES, "maximum": MAX_EXPIRES},
          expires_in_seconds),
    Field("metadata", {
        "type": "object",
        "description": (f"Your own data, returned as stored (the same keys and values; PostgreSQL's JSONB keeps no "
                        "key order, and writes numbers without an exponent): at most "
                        f"{MAX_METADATA_BYTES} bytes of JSON as stored, nested at "
                        f"most {MAX_METADATA_DEPTH} levels, no NUL characters, numbers within the range of a double."),
    }, metadata),
    Field("unique_amount", {
        "type": "boolean",
        "description": ("When another open payment on the wallet awaits the same amount: true raises this one by the "
                        "smallest free step of 0.0001; false (default) is a 409 amount_in_use."),
    }, lambda value: boolean(value, "unique_amount")),
    Field("return_url", {
        **CALLBACK_URL_SCHEMA,
        "description": ("Where the checkout page sends the payer after completion, and its \"back to the shop\" "
                        "link: an http or https URL without user information, backslashes, spaces or control "
                        "characters (its address is not checked: the payer's browser goes there)."),
    }, return_url),
    Field("underpayment_tolerance_usdt", {
        "oneOf": [
            {"type": "string", "pattern": TOLERANCE_PATTERN, "examples": ["0.5"]},
            {"type": "number", "minimum": 0, "exclusiveMaximum": (MAX_MICRO + 1) // MICRO, "deprecated": True,
             "description": NUMBER_WORDS},
        ],
        "description": ("USDT the payment may fall short of its amount and still count as fully paid (completed, "
                        "or paid late): written as expected_amount_usdt is, 0 allowed; at most expected_amount_usdt "
                        "(a 400 above it). Default: UNDERPAYMENT_TOLERANCE_USDT, cut to the amount."),
    }, underpayment_tolerance),
)
# Priced in fiat: instead of expected_amount_usdt (exactly one of the two ways; web/api.py checks it).
PRICE_FIELDS = (
    Field("price_amount", {
        **AMOUNT_SCHEMA,
        "description": ("The price in price_currency, written as an amount is (greater than 0, at most 6 decimals and "
                        "14 integer digits; a string is best). Converted to USDT once, at creation, at the rate then "
                        "(GET /rates), with RATE_MARKUP_PERCENT, rounded up to PRICE_ROUNDING_USDT. " + NUMBER_WORDS),
    }, lambda value: None if value is None else amount(value, "price_amount")),
    Field("price_currency", {
        "type": "string", "pattern": CURRENCY_PATTERN, "examples": ["CNY"],
        "description": ("ISO 4217 code, any case, of a currency FIXED_RATES names or a configured rate source "
                        "quotes (else a 400 unsupported_currency); 503 rate_unavailable while it has no usable rate."),
    }, lambda value: currency(value, "price_currency")),
)
CREATE_PAYMENT = CREATE_PAYMENT + PRICE_FIELDS
# POST /webhooks/test
WEBHOOK_TEST = (
    Field("url", {**CALLBACK_URL_SCHEMA, "description": "Where to send the test webhook (default: "
                                                        "MERCHANT_WEBHOOK_URL). " + CALLBACK_URL_SCHEMA["description"]},
          lambda value: None if value is None else callback_url(value, "url")),
)
