"""Schemathesis hooks for tests/web/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

In cases schemathesis means to be valid they supply what /openapi.json describes in words and JSON
Schema cannot generate: a TRON address whose checksum matches, an order id not used before, a
callback URL whose host resolves (loopback: the run allows private callbacks), cursors this API
returned. They leave out only the valid-looking forms the document says in words are refused.
Cases meant to be invalid are left alone: the API must refuse them."""
from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import base58
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from web.validation import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, lone_surrogate_field  # noqa: E402

CALLBACK_URL = os.environ.get("SCHEMATHESIS_CALLBACK_URL", "http://127.0.0.1:9/hook")
_order_ids = itertools.count()


def tron_address() -> str:
    return base58.b58encode_check(b"\x41" + os.urandom(20)).decode()


def unique_order_id() -> str:
    return f"st-{next(_order_ids)}-{uuid.uuid4().hex[:12]}"


def cursor(*parts: object) -> str:
    """A next_cursor value as the API makes them (unpadded URL-safe base64 of a JSON list)."""
    import base64

    return base64.urlsafe_b64encode(json.dumps([str(p) for p in parts]).encode()).decode().rstrip("=")


def is_positive(case: Any, location: ParameterLocation) -> bool:
    meta = case.meta
    if meta is None:
        return True
    component = meta.components.get(location)
    mode = component.mode if component is not None else meta.generation.mode
    return mode == GenerationMode.POSITIVE


def operation_of(case: Any) -> tuple[str, str]:
    return case.operation.method.upper(), case.operation.path


# --- what the document says in words -----------------------------------------------------------

def amount_refused_in_words(value: Any) -> bool:
    """A JSON number with an exponent, more than 6 decimals or too many digits as Python writes it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    text = json.dumps(value)
    if "e" in text.lower() or "inf" in text.lower() or "nan" in text.lower():
        return True
    try:
        number = Decimal(text)
    except InvalidOperation:
        return True
    return -number.as_tuple().exponent > 6 or number >= Decimal(10) ** 14


def tolerance_refused_in_words(body: dict[str, Any]) -> bool:
    """An underpayment tolerance written as an amount may not be, or above the expected amount."""
    tolerance, expected = body.get("underpayment_tolerance_usdt"), body.get("expected_amount_usdt")
    if tolerance is None:
        return False
    if amount_refused_in_words(tolerance):
        return True
    try:
        return Decimal(str(tolerance)) > Decimal(str(expected))
    except InvalidOperation:
        return False  # an expected amount that is no number: the API refuses it for that


def metadata_refused_in_words(value: Any) -> bool:
    """Over 4 KB of JSON, nested deeper than 32 levels, a NUL character, a number beyond a double."""
    if not isinstance(value, dict):
        return False
    if _depth(value) > MAX_METADATA_DEPTH or _has_nul_or_huge_number(value):
        return True
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_METADATA_BYTES


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _has_nul_or_huge_number(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > 1.7e308
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul_or_huge_number(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul_or_huge_number(v) for v in value)
    return False


def holds_lone_surrogate(body: Any) -> bool:
    """A string that, sent as JSON, carries a lone UTF-16 surrogate escape (a pair is one character)."""
    return lone_surrogate_field(json.loads(json.dumps(body)))[0]


def query_text_refused_in_words(value: Any) -> bool:
    """Filters hold printable characters only."""
    return isinstance(value, str) and not value.isprintable()


# --- hooks -------------------------------------------------------------------------------------

@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    method, path = operation_of(case)
    if method == "POST" and path == "/payments" and isinstance(case.body, dict) and is_positive(
            case, ParameterLocation.BODY):
        if amount_refused_in_words(case.body.get("expected_amount_usdt")) or tolerance_refused_in_words(case.body):
            return False
        if amount_refused_in_words(case.body.get("price_amount")):
            return False
        if metadata_refused_in_words(case.body.get("metadata")) or holds_lone_surrogate(case.body):
            return False
    positive_query = isinstance(case.query, dict) and is_positive(case, ParameterLocation.QUERY)
    return not (positive_query and any(query_text_refused_in_words(case.query.get(name))
                                       for name in ("wallet_address", "order_id")))


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Right before sending: later steps (stateful links, value pools) may have replaced fields."""
    method, path = operation_of(case)
    if method == "POST" and path == "/payments" and isinstance(case.body, dict) and is_positive(
            case, ParameterLocation.BODY):
        case.body = {**case.body, "wallet_address": tron_address(), "order_id": unique_order_id(),
                     "callback_url": CALLBACK_URL}
        if "return_url" in case.body:  # a URL the pattern admits but the URL parser refuses is a 400
            case.body["return_url"] = "https://shop.example/orders/1?from=checkout"
        # The stateful phase's cases do not pass filter_case: what the document refuses in words is replaced here.
        if metadata_refused_in_words(case.body.get("metadata")) or holds_lone_surrogate(case.body.get("metadata")):
            case.body["metadata"] = {}
        if amount_refused_in_words(case.body.get("expected_amount_usdt")):
            case.body["expected_amount_usdt"] = "10"
        if tolerance_refused_in_words(case.body):
            case.body.pop("underpayment_tolerance_usdt")
        if "price_amount" in case.body:  # priced in fiat: a currency this run prices (a fixed rate), a sane amount
            case.body["price_currency"] = "CNY"
            if amount_refused_in_words(case.body.get("price_amount")):
                case.body["price_amount"] = "72"
            case.body.pop("underpayment_tolerance_usdt", None)  # checked against the price's USDT amount
    if method == "POST" and path == "/webhooks/test" and is_positive(case, ParameterLocation.BODY):
        # This run sets no MERCHANT_WEBHOOK_URL: the url is what a valid request must send (in words).
        case.body = {**(case.body if isinstance(case.body, dict) else {}), "url": CALLBACK_URL}
    if isinstance(case.query, dict) and is_positive(case, ParameterLocation.QUERY):
        query = dict(case.query)
        if "cursor" in query and path == "/payments":
            when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=random.randrange(10**8))
            query["cursor"] = cursor(when.isoformat(), uuid.uuid4())
        elif "cursor" in query:
            query["cursor"] = cursor(random.randrange(2**63))
        if "after" in query:
            query["after"] = cursor(random.randrange(2**63))
        case.query = query
