"""The OpenAPI 3.1 document of every route, generated from the definitions the code uses: the request fields and
query parameters with their checks (validation.CREATE_PAYMENT, the query tables of api.py), the answers' fields
with the code that renders them (schemas.py), the error form (errors.py) and the limits. What JSON Schema cannot
say is written in the descriptions. tests/test_openapi.py and the schemathesis run (tests/test_schemathesis.py)
hold the API to it."""
from __future__ import annotations

from typing import Any

from api import EVENTS_QUERY, PAYMENTS_QUERY, TRANSFERS_QUERY
from app import HEALTH_DB_DEADLINE_SECONDS
from errors import ERROR_SCHEMA
from schemas import BOOLEAN, SCHEMAS, STRING, object_schema, ref
from validation import (
    CREATE_PAYMENT,
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    UUID_SCHEMA,
    WEBHOOK_TEST,
    Field,
    body_schema,
)

BODY_RULES = (
    f"UTF-8 JSON of at most {MAX_BODY_BYTES // 1024} KB (413 above, chunked or not), declared `application/json` "
    f"(415 otherwise; a `charset` parameter may only say UTF-8). No key may appear twice in an object, nesting is "
    f"at most {MAX_JSON_DEPTH} levels, and strings may not hold lone UTF-16 surrogate escapes such as \\ud800 (400)."
)


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def response(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    if schema is not None:
        body.update(json_content(schema))
    return body


def parameters(fields: tuple[Field, ...]) -> list[dict[str, Any]]:
    """A route's query parameters, from the table its code reads them with."""
    return [{"name": f.name, "in": "query", "required": f.required, "schema": f.schema, "description": f.description}
            for f in fields]


def list_of(key: str, item: str, **extra: Any) -> dict[str, Any]:
    """A page of a list (`paging.Page`): its items, the cursor of the next page, and `extra` members."""
    return {
        "type": "object",
        "required": [key, "next_cursor", *extra],
        "properties": {key: {"type": "array", "items": ref(item)}, "next_cursor": {"type": ["string", "null"]},
                       **extra},
    }


PAYMENT_ID = {"name": "payment_id", "in": "path", "required": True, "schema": UUID_SCHEMA,
              "description": "A payment's id (a UUID written 8-4-4-4-12); any other text is a 404."}
BAD_INPUT = response("Invalid input; `field` names it", ref("Error"))
UNAUTHORIZED = response("Missing, unknown or revoked API key", ref("Error"))
NOT_FOUND = response("No payment has this id", ref("Error"))
TOO_LARGE = response(f"Body over {MAX_BODY_BYTES // 1024} KB", ref("Error"))
NOT_JSON = response("A non-empty body not declared application/json (UTF-8)", ref("Error"))
DATABASE_DOWN = response("The database did not answer in time", ref("Error"))
NO_FIELDS_BODY = {
    "required": False,
    "description": "Optional: send no body, or an empty JSON object.",
    **json_content({"type": "object", "maxProperties": 0}),
}
COMPONENTS: dict[str, Any] = {
    "Error": ERROR_SCHEMA,
    "CreatePayment": body_schema(CREATE_PAYMENT, BODY_RULES),
    "WebhookTest": body_schema(WEBHOOK_TEST, BODY_RULES),
    **{name: object_schema(fields) for name, fields in SCHEMAS.items()},
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
            "parameters": parameters(PAYMENTS_QUERY),
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
                "200": response("Logs", {"type": "object", "required": ["logs"],
                                         "properties": {"logs": {"type": "array", "items": ref("Log")}}}),
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
                "202": response("Queued", {"type": "object", "required": ["queued", "event_id"],
                                           "properties": {"queued": BOOLEAN, "event_id": STRING}}),
                "404": NOT_FOUND,
                "409": response("The payment has no event yet", ref("Error")),
            },
        })),
    },
    "/transfers": {
        "get": secured({
            "summary": "Observed USDT transfers to watched wallets, newest first",
            "parameters": parameters(TRANSFERS_QUERY),
            "responses": {"200": response("A page of transfers", list_of("transfers", "Transfer"))},
        }),
    },
    "/events": {
        "get": secured({
            "summary": "Every webhook event with its delivery state, oldest first",
            "parameters": parameters(EVENTS_QUERY),
            "responses": {"200": response("A page of events", list_of("events", "Event", has_more=BOOLEAN))},
        }),
    },
    "/events/{event_id}/retry": {
        "post": with_body(secured({
            "summary": "Queue any webhook event again (same event id), account-level ones included",
            "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": STRING,
                            "description": "An event's id, as /events lists it; any other text is a 404."}],
            "requestBody": NO_FIELDS_BODY,
            "responses": {
                "202": response("Queued", {"type": "object", "required": ["queued", "event_id"],
                                           "properties": {"queued": BOOLEAN, "event_id": STRING}}),
                "404": response("No event has this id", ref("Error")),
                "409": response("An account-level event with no target: MERCHANT_WEBHOOK_URL is unset",
                                ref("Error")),
            },
        })),
    },
    "/webhooks/test": {
        "post": with_body(secured({
            "summary": "Queue a signed webhook.test event to url (default MERCHANT_WEBHOOK_URL) through the outbox",
            "requestBody": {"required": False, "description": "Optional; without url, MERCHANT_WEBHOOK_URL "
                            "(400 when neither is given).", **json_content(ref("WebhookTest"))},
            "responses": {
                "202": response("Queued", {"type": "object", "required": ["queued", "event_id", "url"],
                                           "properties": {"queued": BOOLEAN, "event_id": STRING, "url": STRING}}),
            },
        })),
    },
    "/health": {
        "get": {
            "summary": "Liveness and watcher state (no API key)",
            "responses": {
                "200": response("healthy or degraded", ref("Health")),
                "503": response(f"unhealthy: the database is unreachable or did not answer within "
                                f"{HEALTH_DB_DEADLINE_SECONDS:g} s", ref("Health")),
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
            "schemas": COMPONENTS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
