"""The OpenAPI 3.1 document of every route (kept in step with the code by tests/test_openapi.py)."""
from __future__ import annotations

from typing import Any

AMOUNT = {"type": "string", "pattern": r"^\d+(\.\d{1,6})?$", "examples": ["10.5"]}
TIME = {"type": ["string", "null"], "format": "date-time"}
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    if schema is not None:
        body.update(json_content(schema))
    return body


ERRORS = {
    "400": response("Invalid input; `field` names it", ref("Error")),
    "401": response("Missing, unknown or revoked API key", ref("Error")),
}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PAYMENT_ID = {"name": "payment_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size")
CURSOR = query("cursor", {"type": "string"}, "next_cursor of the previous page")


def list_of(key: str, item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "next_cursor"],
        "properties": {key: {"type": "array", "items": ref(item)}, "next_cursor": {"type": ["string", "null"]}},
    }


SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "CreatePayment": {
        "type": "object",
        "required": ["wallet_address", "expected_amount_usdt", "order_id", "callback_url"],
        "additionalProperties": False,
        "properties": {
            "wallet_address": {"type": "string", "minLength": 34, "maxLength": 34, "description": "base58check"},
            "expected_amount_usdt": {
                "oneOf": [AMOUNT, {"type": "number", "exclusiveMinimum": 0}],
                "description": "at most 6 decimals; no exponent",
            },
            "order_id": {"type": "string", "minLength": 1, "maxLength": 128},
            "callback_url": {"type": "string", "format": "uri"},
            "expires_in_seconds": {"type": "integer", "minimum": 60, "maximum": 2592000},
            "metadata": {"type": "object", "description": "at most 4 KB of JSON"},
            "unique_amount": {"type": "boolean"},
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
    operation["security"] = [{"bearerAuth": []}]
    operation["responses"] = {**operation["responses"], **ERRORS}
    return operation


PATHS: dict[str, Any] = {
    "/payments": {
        "post": secured({
            "summary": "Create a payment watch (idempotent on order_id)",
            "requestBody": {"required": True, **json_content(ref("CreatePayment"))},
            "responses": {
                "201": response("Created", ref("Payment")),
                "200": response("Replay of the same request: the existing payment", ref("Payment")),
                "409": response("order_id_conflict or amount_in_use", ref("Error")),
                "413": response("Body over 64 KB", ref("Error")),
            },
        }),
        "get": secured({
            "summary": "List payments, newest first",
            "parameters": [
                query("status", {"enum": ["pending", "completed", "failed", "expired"]}, "Filter by status"),
                query("wallet_address", {"type": "string"}, "Filter by wallet"),
                query("order_id", {"type": "string"}, "Filter by order id"),
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
            "responses": {"200": response("The payment", ref("Payment")), "404": response("Unknown id", ref("Error"))},
        }),
    },
    "/payments/{payment_id}/cancel": {
        "post": secured({
            "summary": "Cancel a pending payment that has received nothing",
            "parameters": [PAYMENT_ID],
            "responses": {
                "200": response("Cancelled (status failed, failure_reason cancelled)", ref("Payment")),
                "404": response("Unknown id", ref("Error")),
                "409": response("Not pending, or money already received", ref("Error")),
            },
        }),
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
                "404": response("Unknown id", ref("Error")),
            },
        }),
    },
    "/payments/{payment_id}/callback/retry": {
        "post": secured({
            "summary": "Queue the payment's latest webhook event again (same event id)",
            "parameters": [PAYMENT_ID],
            "responses": {
                "202": response(
                    "Queued",
                    {"type": "object", "properties": {"queued": {"type": "boolean"}, "event_id": {"type": "string"}}},
                ),
                "404": response("Unknown id", ref("Error")),
                "409": response("The payment has no event yet", ref("Error")),
            },
        }),
    },
    "/transfers": {
        "get": secured({
            "summary": "Observed USDT transfers to watched wallets, newest first",
            "parameters": [
                query("status", {"enum": ["unmatched", "credited"]}, "Filter by status"),
                query("wallet_address", {"type": "string"}, "Filter by recipient"),
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
                query("after", {"type": "string"}, "next_cursor of the previous call"),
                query("payment_id", {"type": "string", "format": "uuid"}, "Only this payment's events"),
                LIMIT,
            ],
            "responses": {"200": response("A page of events", list_of("events", "Event"))},
        }),
    },
    "/health": {
        "get": {
            "summary": "Liveness and watcher state (no API key)",
            "responses": {
                "200": response("healthy or degraded", ref("Health")),
                "503": response("unhealthy: the database is unreachable", ref("Health")),
            },
        },
    },
    "/stats": {
        "get": {
            "summary": "Counters (no API key)",
            "responses": {"200": response("Counters", ref("Stats"))},
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
            "description": "Watches TRON for USDT (TRC20) payments and reports them through signed webhooks.",
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
