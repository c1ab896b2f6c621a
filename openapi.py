"""The OpenAPI 3.1 document of every route (kept in step with the code by tests/test_openapi.py and
the schemathesis run in tests/test_schemathesis.py).

It states exactly what the API accepts wherever JSON Schema can say it (the patterns come from
validation.py, the code that enforces them); what it cannot say is written in the descriptions."""
from __future__ import annotations

from typing import Any

from paging import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT
from validation import (
    ADDRESS_PATTERN,
    AMOUNT_PATTERN,
    CALLBACK_URL_PATTERN,
    MAX_EXPIRES,
    MAX_JSON_DEPTH,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_ORDER_ID,
    MAX_URL,
    MIN_EXPIRES,
    ORDER_ID_PATTERN,
    UUID_PATTERN,
)

# Amounts in answers: plain decimal strings, trailing zeros stripped ("10.5", "10", "0").
AMOUNT = {"type": "string", "pattern": r"^(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?$", "examples": ["10.5"]}
AMOUNT_IN = {
    "oneOf": [
        {"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["10.5"]},
        {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100_000_000_000_000},
    ],
    "description": (
        "USDT, greater than 0, at most 6 decimals and 14 integer digits. A string is written plainly: "
        "no sign, exponent, spaces or leading zeros (\"0.5\" has its one zero). A JSON number is read exactly "
        "as written (never through a float) and is refused when written with an exponent or with more than "
        "6 decimals."
    ),
}
ADDRESS = {
    "type": "string", "pattern": ADDRESS_PATTERN, "examples": ["TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"],
    "description": "A TRON address in base58check; its checksum must match and it must start with the 0x41 byte.",
}
UUID = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
TIME = {"type": ["string", "null"], "format": "date-time"}
PRINTABLE = "printable characters only (no control, format, private-use, surrogate or unassigned characters)"
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
}
BODY_RULES = (
    f"UTF-8 JSON of at most 64 KB (413 above, chunked or not), declared `application/json` (415 otherwise; "
    f"a `charset` parameter may only say UTF-8). No key may appear twice in an object, nesting is at most "
    f"{MAX_JSON_DEPTH} levels, and strings may not hold lone UTF-16 surrogate escapes such as \\ud800 (400)."
)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    if schema is not None:
        body.update(json_content(schema))
    return body


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PAYMENT_ID = {"name": "payment_id", "in": "path", "required": True, "schema": UUID,
              "description": "A payment's id (a UUID written 8-4-4-4-12); any other text is a 404."}
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
              "Page size, written in ASCII digits")
CURSOR = query("cursor", {"type": "string", "pattern": CURSOR_PATTERN},
               "Exactly a next_cursor value returned by this endpoint (anything else is a 400)")
FILTER_TEXT = {"type": "string", "maxLength": MAX_ORDER_ID, "description": f"{PRINTABLE}; empty means no filter"}

BAD_INPUT = response("Invalid input; `field` names it", ref("Error"))
UNAUTHORIZED = response("Missing, unknown or revoked API key", ref("Error"))
NOT_FOUND = response("No payment has this id", ref("Error"))
TOO_LARGE = response("Body over 64 KB", ref("Error"))
NOT_JSON = response("A non-empty body not declared application/json (UTF-8)", ref("Error"))
DATABASE_DOWN = response("The database did not answer in time", ref("Error"))
NO_FIELDS_BODY = {
    "required": False,
    "description": "Optional: send no body, or an empty JSON object.",
    **json_content({"type": "object", "maxProperties": 0}),
}


def list_of(key: str, item: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "next_cursor"],
        "properties": {key: {"type": "array", "items": ref(item)}, "next_cursor": {"type": ["string", "null"]},
                       **extra},
    }


SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "CreatePayment": {
        "type": "object",
        "description": BODY_RULES,
        "required": ["wallet_address", "expected_amount_usdt", "order_id", "callback_url"],
        "additionalProperties": False,
        "properties": {
            "wallet_address": ADDRESS,
            "expected_amount_usdt": AMOUNT_IN,
            "order_id": {
                "type": "string", "minLength": 1, "maxLength": MAX_ORDER_ID, "pattern": ORDER_ID_PATTERN,
                "description": (f"Your order reference, unique: {PRINTABLE}, no whitespace at either end. "
                                "The same order_id with the same body replays (200); with another body it is "
                                "a 409 order_id_conflict."),
            },
            "callback_url": {
                "type": "string", "maxLength": MAX_URL, "pattern": CALLBACK_URL_PATTERN,
                "description": ("An http or https URL without user information, backslashes, spaces or control "
                                "characters, whose host the URL parser accepts, with a port from 1 to 65535; the "
                                "host must resolve, and every address it resolves to must be public (not "
                                "loopback, private, link-local, unique-local, multicast or reserved)."),
            },
            "expires_in_seconds": {"type": "integer", "minimum": MIN_EXPIRES, "maximum": MAX_EXPIRES},
            "metadata": {
                "type": "object",
                "description": (f"Your own data, returned as given: at most {MAX_METADATA_BYTES} bytes of JSON, "
                                f"nested at most {MAX_METADATA_DEPTH} levels, no NUL characters, numbers within "
                                "the range of a double."),
            },
            "unique_amount": {
                "type": "boolean",
                "description": ("When another open payment on the wallet awaits the same amount: true raises "
                                "this one by the smallest free step of 0.0001; false (default) is a 409 "
                                "amount_in_use."),
            },
        },
    },
    "Transfer": {
        "type": "object",
        "properties": {
            "transaction_hash": {"type": "string"},
            "log_index": {"type": "integer"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "amount_usdt": AMOUNT,
            "block_number": {"type": "integer"},
            "block_timestamp": TIME,
            "status": {"enum": ["unmatched", "credited"]},
            "payment_id": {"type": ["string", "null"], "format": "uuid"},
        },
    },
    "Payment": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "order_id": {"type": "string"},
            "wallet_address": {"type": "string"},
            "expected_amount_usdt": AMOUNT,
            "received_amount_usdt": AMOUNT,
            "status": {"enum": ["pending", "completed", "failed", "expired"]},
            "failure_reason": {"type": ["string", "null"], "enum": [None, "cancelled"]},
            "transaction_hash": {"type": ["string", "null"]},
            "transfers": {"type": "array", "items": ref("Transfer")},
            "created_at": TIME,
            "expires_at": TIME,
            "completed_at": TIME,
            "callback_url": {"type": "string"},
            "callback_attempts": {"type": "integer"},
            "callback_success": {"type": "boolean"},
            "paid_late": {"type": "boolean"},
            "metadata": {"type": "object"},
        },
    },
    "Log": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "event_type": {"type": "string"},
            "message": {"type": "string"},
            "metadata": {"type": ["object", "null"]},
            "created_at": TIME,
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {
                "enum": [
                    "payment.completed", "payment.expired", "payment.partial", "payment.paid_late",
                    "payment.cancelled",
                ]
            },
            "payment_id": {"type": "string", "format": "uuid"},
            "created_at": TIME,
            "state": {"enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer"},
            "next_attempt_at": TIME,
            "last_status_code": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
            "delivered_at": TIME,
            "data": ref("Payment"),
        },
    },
    "Health": {
        "type": "object",
        "properties": {
            "status": {"enum": ["healthy", "degraded", "unhealthy"]},
            "timestamp": TIME,
            "network": {"type": "string"},
            "active_payments": {"type": ["integer", "null"]},
            "total_payments": {"type": ["integer", "null"]},
            "database": {"enum": ["connected", "disconnected"]},
            "watcher": {
                "type": ["object", "null"],
                "description": "strategy, last cycle, seconds and blocks behind, last_error, refused_answers, "
                               "each upstream's state and pause, and the reconciliation's last complete pass",
            },
        },
    },
    "Stats": {
        "type": "object",
        "properties": {
            name: {"type": "integer"}
            for name in (
                "total_payments", "pending_payments", "completed_payments", "failed_payments",
                "expired_payments", "unmatched_transfers", "reconciled_transfers", "rejected_transfers",
                "webhooks_pending", "webhooks_failed",
            )
        }
        | {"uptime_seconds": {"type": "number"}, "polling_interval": {"type": "number"},
           "network": {"type": "string"}},
    },
}


def secured(operation: dict[str, Any]) -> dict[str, Any]:
    """A merchant route: API key, and the answers every such route may give."""
    operation["security"] = [{"bearerAuth": []}]
    operation["responses"] = {**operation["responses"], "400": BAD_INPUT, "401": UNAUTHORIZED,
                              "503": DATABASE_DOWN}
    return operation


def with_body(operation: dict[str, Any]) -> dict[str, Any]:
    operation["responses"] = {**operation["responses"], "413": TOO_LARGE, "415": NOT_JSON}
    return operation


PATHS: dict[str, Any] = {
    "/payments": {
        "post": with_body(secured({
            "summary": "Create a payment watch (idempotent on order_id)",
            "requestBody": {"required": True, "description": BODY_RULES, **json_content(ref("CreatePayment"))},
            "responses": {
                "201": response("Created", ref("Payment")),
                "200": response("Replay of the same request: the existing payment", ref("Payment")),
                "409": response("order_id_conflict (the order_id is taken with another body) or amount_in_use "
                                "(another open payment on the wallet awaits this amount)", ref("Error")),
            },
        })),
        "get": secured({
            "summary": "List payments, newest first",
            "parameters": [
                query("status", {"enum": ["pending", "completed", "failed", "expired"]}, "Filter by status"),
                query("wallet_address", FILTER_TEXT, "Filter by wallet"),
                query("order_id", FILTER_TEXT, "Filter by order id"),
                LIMIT,
                CURSOR,
            ],
            "responses": {"200": response("A page of payments", list_of("payments", "Payment"))},
        }),
    },
    "/payments/{payment_id}": {
        "get": secured({
            "summary": "One payment",
            "parameters": [PAYMENT_ID],
            "responses": {"200": response("The payment", ref("Payment")), "404": NOT_FOUND},
        }),
    },
    "/payments/{payment_id}/cancel": {
        "post": with_body(secured({
            "summary": "Cancel a pending payment that has received nothing",
            "parameters": [PAYMENT_ID],
            "requestBody": NO_FIELDS_BODY,
            "responses": {
                "200": response("Cancelled (status failed, failure_reason cancelled)", ref("Payment")),
                "404": NOT_FOUND,
                "409": response("Not pending, or money already received", ref("Error")),
            },
        })),
    },
    "/payments/{payment_id}/logs": {
        "get": secured({
            "summary": "The payment's audit trail, oldest first",
            "parameters": [PAYMENT_ID],
            "responses": {
                "200": response(
                    "Logs",
                    {"type": "object", "properties": {"logs": {"type": "array", "items": ref("Log")}}},
                ),
                "404": NOT_FOUND,
            },
        }),
    },
    "/payments/{payment_id}/callback/retry": {
        "post": with_body(secured({
            "summary": "Queue the payment's latest webhook event again (same event id)",
            "parameters": [PAYMENT_ID],
            "requestBody": NO_FIELDS_BODY,
            "responses": {
                "202": response(
                    "Queued",
                    {"type": "object", "properties": {"queued": {"type": "boolean"}, "event_id": {"type": "string"}}},
                ),
                "404": NOT_FOUND,
                "409": response("The payment has no event yet", ref("Error")),
            },
        })),
    },
    "/transfers": {
        "get": secured({
            "summary": "Observed USDT transfers to watched wallets, newest first",
            "parameters": [
                query("status", {"enum": ["unmatched", "credited"]}, "Filter by status"),
                query("wallet_address", FILTER_TEXT, "Filter by recipient"),
                LIMIT,
                CURSOR,
            ],
            "responses": {"200": response("A page of transfers", list_of("transfers", "Transfer"))},
        }),
    },
    "/events": {
        "get": secured({
            "summary": "Every webhook event with its delivery state, oldest first",
            "parameters": [
                query("after", {"type": "string", "pattern": CURSOR_PATTERN},
                      "Exactly a next_cursor value returned by /events (anything else is a 400)"),
                query("payment_id", UUID, "Only this payment's events"),
                LIMIT,
            ],
            "responses": {"200": response("A page of events",
                                          list_of("events", "Event", has_more={"type": "boolean"}))},
        }),
    },
    "/health": {
        "get": {
            "summary": "Liveness and watcher state (no API key)",
            "responses": {
                "200": response("healthy or degraded", ref("Health")),
                "503": response("unhealthy: the database is unreachable or did not answer within 3 s",
                                ref("Health")),
            },
        },
    },
    "/stats": {
        "get": {
            "summary": "Counters (no API key)",
            "responses": {"200": response("Counters", ref("Stats")), "503": DATABASE_DOWN},
        },
    },
    "/openapi.json": {
        "get": {
            "summary": "This document (no API key)",
            "responses": {"200": response("OpenAPI 3.1 document", {"type": "object"})},
        },
    },
}


def build_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tron-usdt-monitor",
            "version": "1.0.0",
            "description": (
                "Watches TRON for USDT (TRC20) payments and reports them through signed webhooks. "
                "Errors are {\"error\", \"message\", \"field\"?}; bad input is a 4xx and stores nothing. "
                f"Request bodies: {BODY_RULES} Unknown routes are a JSON 404; a method a route does not "
                "take is a 405 with an Allow header."
            ),
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
