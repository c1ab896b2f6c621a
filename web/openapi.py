"""The OpenAPI 3.1 document of every route, generated from the definitions the code uses: the request fields and
query parameters with their checks (validation.CREATE_PAYMENT, the query tables of web/api.py), the answers'
fields with the code that renders them (ledger/serialize.py, web/schemas.py), the error form (web/errors.py) and the
limits, and the parts a network plugs in (`Part`: the sandbox's). What JSON Schema cannot say is written in the
descriptions. tests/web/test_openapi.py and the schemathesis run (tests/web/test_schemathesis.py)
hold the API to it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, jsonify

from chain.claims import CLAIMS_PER_MINUTE, FOUND, NOT_SOLIDIFIED, REASONS
from ledger.serialize import AMOUNT, BOOLEAN, STRING, TIME, object_schema, ref
from web.api import ADDRESSES_QUERY, EVENTS_QUERY, HEALTH_DB_DEADLINE_SECONDS, PAYMENTS_QUERY, TRANSFERS_QUERY
from web.errors import ERROR_SCHEMA
from web.pages import CATALOGUES
from web.schemas import ENUMS, EVENT_DATA, SCHEMAS
from web.services import services
from web.validation import (
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


NEXT_CURSOR = {"type": ["string", "null"], "description": (
    "The cursor of the next page (pass it back as it is); null on the last page. Every list pages this way: "
    "`while next_cursor:` reads it to the end.")}


def list_of(key: str, item: str, **extra: Any) -> dict[str, Any]:
    """A page of a list (`paging.Page`): its items, the cursor of the next page (null on the last), and `extra`
    members."""
    return {
        "type": "object",
        "required": [key, "next_cursor", *extra],
        "properties": {key: {"type": "array", "items": ref(item)}, "next_cursor": NEXT_CURSOR, **extra},
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
CHECKOUT_TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "The token of a payment's checkout_url"}
LANG = {"name": "lang", "in": "query", "required": False, "schema": {"type": "string"},
        "description": f"The page's language: {', '.join(CATALOGUES)} (default: by Accept-Language, else en)"}
CHECKOUT_STATUS = {
    "type": "object",
    "required": ["status", "received_amount_usdt", "remaining_usdt", "expires_at", "paid_late",
                 "unconfirmed_amount_usdt", "confirmations", "confirmations_needed"],
    "properties": {"status": ref("PaymentStatus"), "received_amount_usdt": AMOUNT,
                   "remaining_usdt": AMOUNT, "expires_at": TIME, "paid_late": BOOLEAN,
                   "unconfirmed_amount_usdt": {**AMOUNT, "description": "money seen in blocks not solidified yet "
                                                                        "(not received yet)"},
                   "confirmations": {"type": ["integer", "null"], "description": "the fewest confirmations of that "
                                     "money (blocks from its own to the head, counting both); null when none"},
                   "confirmations_needed": {"type": ["integer", "null"], "description": "the usual depth at which "
                                            "a block is final (the head's distance to the solid head)"}},
}
CLAIM_BODY = {"type": "object", "required": ["transaction_hash"], "additionalProperties": False,
              "properties": {"transaction_hash": {"type": "string", "description": "64 hex digits, 0x allowed"}}}
CLAIM_ANSWER = {
    "type": "object",
    "required": ["result", "transaction_hash", "amount_usdt", "message"],
    "properties": {
        "result": {"type": "string", "enum": [FOUND, NOT_SOLIDIFIED, *REASONS],
                   "description": "found: a solidified, successful USDT transfer to the wallet, credited by the "
                                  "watcher in chain order; not_solidified: try again shortly; otherwise why not"},
        "transaction_hash": STRING,
        "amount_usdt": {"type": ["string", "null"], "description": "USDT it sent to the wallet, when found"},
        "message": {"type": "string", "description": "The same, in words, in the page's language"},
    },
}


def html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": STRING}}}


def json_or_page(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An answer in JSON to a JSON request, and the page (HTML) to a browser's form."""
    return {"description": f"{description} (JSON; a form post gets the page back)",
            "content": {"application/json": {"schema": schema}, "text/html": {"schema": STRING}}}


QUEUED = {"type": "object", "required": ["queued", "event_id"], "properties": {"queued": BOOLEAN, "event_id": STRING}}
RESUME_CURSOR = {"type": ["string", "null"], "description": (
    "Where to read on from later, for events newer than these: pass it as `after`, on the last page too (where "
    "next_cursor is null). Null only while there is no event at all.")}
# A payment is asked for in USDT or priced in fiat, exactly one of the two ways.
ONE_WAY_TO_PRICE = [
    {"title": "In USDT", "required": ["expected_amount_usdt"],
     "not": {"anyOf": [{"required": ["price_amount"]}, {"required": ["price_currency"]}]}},
    {"title": "Priced in fiat", "required": ["price_amount", "price_currency"],
     "not": {"required": ["expected_amount_usdt"]}},
]
COMPONENTS: dict[str, Any] = {
    "Error": ERROR_SCHEMA,
    **ENUMS,
    **EVENT_DATA,
    "PaymentList": list_of("payments", "Payment"),
    "TransferList": list_of("transfers", "Transfer"),
    "AddressList": list_of("addresses", "DepositAddress"),
    "EventList": list_of("events", "Event", has_more=BOOLEAN, resume_cursor=RESUME_CURSOR),
    "LogList": {"type": "object", "required": ["logs"], "properties": {"logs": {"type": "array", "items": ref("Log")}}},
    "Queued": QUEUED,
    "TestWebhookQueued": {**QUEUED, "required": [*QUEUED["required"], "url"],
                          "properties": {**QUEUED["properties"], "url": STRING}},
    "CheckoutStatus": CHECKOUT_STATUS,
    "ClaimResult": CLAIM_ANSWER,
    "OpenApiDocument": {"type": "object", "description": "An OpenAPI 3.1 document"},
    "CreatePayment": body_schema(CREATE_PAYMENT, BODY_RULES),
    "WebhookTest": body_schema(WEBHOOK_TEST, BODY_RULES),
    **{name: object_schema(fields) for name, fields in SCHEMAS.items()},
}


def secured(operation: dict[str, Any], unavailable: str | None = None) -> dict[str, Any]:
    """A merchant route: API key, and the answers every such route may give (`unavailable`: its 503's words when it
    has more reasons than the database)."""
    operation["security"] = [{"bearerAuth": []}]
    operation["responses"] = {**operation["responses"], "400": BAD_INPUT, "401": UNAUTHORIZED,
                              "503": DATABASE_DOWN if unavailable is None else response(unavailable, ref("Error"))}
    return operation


def with_body(operation: dict[str, Any]) -> dict[str, Any]:
    operation["responses"] = {**operation["responses"], "413": TOO_LARGE, "415": NOT_JSON}
    return operation


PATHS: dict[str, Any] = {
    "/payments": {
        "post": with_body(secured({
            "summary": "Create a payment watch (idempotent on order_id)",
            # the two ways beside the reference, so that a generated client keeps one CreatePayment model
            "requestBody": {"required": True, "description": BODY_RULES,
                            **json_content({**ref("CreatePayment"), "oneOf": ONE_WAY_TO_PRICE})},
            "responses": {
                "201": response("Created", ref("Payment")),
                "200": response("Replay of the same request: the existing payment", ref("Payment")),
                "409": response("order_id_conflict (the order_id is taken with another body), amount_in_use "
                                "(another open payment on the wallet awaits this amount) or, on a derived address, "
                                "deposit_addresses_exhausted (the xpub's account has no index left); "
                                "address_reserved (the wallet_address given is another payment's derived deposit "
                                "address)", ref("Error")),
            },
        }, unavailable="rate_unavailable (a price in a currency with no usable rate now: no quote yet, every "
                       "quote stale, or the sources disagree; nothing stored) or the database is unreachable")),
        "get": secured({
            "summary": "List payments, newest first",
            "parameters": parameters(PAYMENTS_QUERY),
            "responses": {"200": response("A page of payments", ref("PaymentList"))},
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
                "200": response("Logs", ref("LogList")),
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
                "202": response("Queued", ref("Queued")),
                "404": NOT_FOUND,
                "409": response("The payment has no event yet", ref("Error")),
            },
        })),
    },
    "/transfers": {
        "get": secured({
            "summary": "Observed USDT transfers to watched wallets, newest first",
            "parameters": parameters(TRANSFERS_QUERY),
            "responses": {"200": response("A page of transfers", ref("TransferList"))},
        }),
    },
    "/addresses": {
        "get": secured({
            "summary": "Deposit addresses derived from DEPOSIT_XPUB and taken by payments, in index order, with "
                       "what reached each",
            "parameters": parameters(ADDRESSES_QUERY),
            "responses": {"200": response("A page of addresses", ref("AddressList"))},
        }),
    },
    "/events": {
        "get": secured({
            "summary": "Every webhook event with its delivery state, oldest first",
            "parameters": parameters(EVENTS_QUERY),
            "responses": {"200": response("A page of events", ref("EventList"))},
        }),
    },
    "/events/{event_id}/retry": {
        "post": with_body(secured({
            "summary": "Queue any webhook event again (same event id), account-level ones included",
            "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": STRING,
                            "description": "An event's id, as /events lists it; any other text is a 404."}],
            "requestBody": NO_FIELDS_BODY,
            "responses": {
                "202": response("Queued", ref("Queued")),
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
                "202": response("Queued", ref("TestWebhookQueued")),
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
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text format); Bearer METRICS_TOKEN when that is set, not an API key",
            "description": "With METRICS_TOKEN set, send it as 'Authorization: Bearer <METRICS_TOKEN>' (401 "
                           "otherwise); unset, the route is open, like /health. No label names a wallet, payment "
                           "or transaction.",
            "responses": {
                "200": {"description": "Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4; "
                                       "charset=utf-8`); as the request's Accept asks, text format 1.0.0 "
                                       "(`text/plain; version=1.0.0`) or OpenMetrics 1.0.0 "
                                       "(`application/openmetrics-text`), as prometheus_client negotiates it",
                        "content": {"text/plain": {"schema": {"type": "string"}},
                                    "application/openmetrics-text": {"schema": {"type": "string"}}}},
                "401": response("METRICS_TOKEN is set and was not sent", ref("Error")),
            },
        },
    },
    "/pay/{token}": {
        "get": {
            "summary": "The hosted checkout page of the payment whose checkout_url holds the token (public, HTML)",
            "parameters": [CHECKOUT_TOKEN, LANG],
            "responses": {"200": html("The page"), "404": html("No payment has this token: a plain page")},
        },
    },
    "/pay/{token}/status": {
        "get": {
            "summary": "What the checkout page polls (public; cached for a couple of seconds)",
            "parameters": [CHECKOUT_TOKEN],
            "responses": {"200": response("The payment's status as the payer sees it", ref("CheckoutStatus")),
                          "404": response("No payment has this token", ref("Error")), "503": DATABASE_DOWN},
        },
    },
    "/pay/{token}/claim": {
        "post": {
            "summary": "\"I already paid\": check a transaction hash on chain at once (public, rate-limited per token)",
            "parameters": [CHECKOUT_TOKEN, LANG],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": CLAIM_BODY},
                "application/x-www-form-urlencoded": {"schema": CLAIM_BODY},
            }},
            "responses": {
                "200": json_or_page("What the chain says of the transaction", ref("ClaimResult")),
                "400": json_or_page("Not a transaction hash, or an unreadable body", ref("Error")),
                "404": json_or_page("No payment has this token", ref("Error")),
                "413": TOO_LARGE,
                "415": response("A body that is neither JSON nor a urlencoded form", ref("Error")),
                "429": json_or_page(f"More than {CLAIMS_PER_MINUTE} claims a minute on this page (Retry-After)",
                                    ref("Error")),
                "503": DATABASE_DOWN,
            },
        },
    },
    "/rates": {
        "get": secured({
            "summary": "The rates a payment priced in fiat would get now, and each source's latest quotes",
            "responses": {"200": response("Per currency its rate or why none; per source its quotes, their age and "
                                          "its errors", ref("Rates"))},
        }),
    },
    "/openapi.json": {
        "get": {
            "summary": "This document (no API key)",
            "responses": {"200": response("OpenAPI 3.1 document", ref("OpenApiDocument"))},
        },
    },
}


# Each operation's name and group, for the clients generated from the document: `operationId` becomes a function's
# name (create_payment), the tag its module (api/payments).
TAGS = {
    "payments": "Payment watches: create, read, list, cancel, their audit trail and webhook retry",
    "transfers": "USDT transfers seen on the chain, credited or not",
    "addresses": "Deposit addresses derived from the merchant's xpub (DEPOSIT_XPUB), one per payment",
    "events": "Every webhook event with its delivery state",
    "webhooks": "Test webhooks",
    "rates": "Fiat rates: what a payment priced in a currency would get now",
    "operator": "Health, counters, metrics and this document (no API key)",
    "checkout": "The payer's hosted checkout page (public, scoped by its token)",
}
OPERATIONS = {
    ("/payments", "post"): ("createPayment", "payments"),
    ("/payments", "get"): ("listPayments", "payments"),
    ("/payments/{payment_id}", "get"): ("getPayment", "payments"),
    ("/payments/{payment_id}/cancel", "post"): ("cancelPayment", "payments"),
    ("/payments/{payment_id}/logs", "get"): ("getPaymentLogs", "payments"),
    ("/payments/{payment_id}/callback/retry", "post"): ("retryPaymentCallback", "payments"),
    ("/transfers", "get"): ("listTransfers", "transfers"),
    ("/addresses", "get"): ("listAddresses", "addresses"),
    ("/events", "get"): ("listEvents", "events"),
    ("/events/{event_id}/retry", "post"): ("retryEvent", "events"),
    ("/webhooks/test", "post"): ("sendTestWebhook", "webhooks"),
    ("/health", "get"): ("getHealth", "operator"),
    ("/stats", "get"): ("getStats", "operator"),
    ("/rates", "get"): ("getRates", "rates"),
    ("/metrics", "get"): ("getMetrics", "operator"),
    ("/openapi.json", "get"): ("getOpenApiDocument", "operator"),
    ("/pay/{token}", "get"): ("getCheckoutPage", "checkout"),
    ("/pay/{token}/status", "get"): ("getCheckoutStatus", "checkout"),
    ("/pay/{token}/claim", "post"): ("claimCheckoutPayment", "checkout"),
}


@dataclass(frozen=True)
class Part:
    """A part of the document that a network plugs in (the sandbox's): its paths (only where its routes exist),
    its named schemas, the name and group of each of its operations, and its group's description."""

    paths: dict[str, Any] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)
    operations: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def named(paths: dict[str, Any], operations: dict[tuple[str, str], tuple[str, str]]) -> dict[str, Any]:
    """`paths` with each operation's operationId and tag (a route missing from `operations` is a KeyError: every
    operation is named)."""
    return {path: {method: {"operationId": operations[path, method][0], "tags": [operations[path, method][1]],
                            **operation}
                   for method, operation in methods.items()}
            for path, methods in paths.items()}


def build_spec(parts: Sequence[Part] = (), server_url: str | None = None, deposit_addresses: bool = False
               ) -> dict[str, Any]:
    """The document: every route of the API and the checkout page, and the parts plugged in (the sandbox network's
    schemas, and its routes where they exist). `server_url`: the service's public address (PUBLIC_BASE_URL), the
    document's one server. `deposit_addresses` (DEPOSIT_XPUB is set): a create may leave wallet_address out."""
    operations = dict(OPERATIONS)
    paths = dict(PATHS)
    components = dict(COMPONENTS)
    if not deposit_addresses:
        create = components["CreatePayment"]
        components["CreatePayment"] = {**create, "required": ["wallet_address", *create["required"]]}
    tags = dict(TAGS)
    for part in parts:
        operations |= part.operations
        paths |= part.paths
        components |= part.components
        tags |= part.tags
    paths = named(paths, operations)
    used_tags = {tag for methods in paths.values() for operation in methods.values() for tag in operation["tags"]}
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
        **({"servers": [{"url": server_url}]} if server_url else {}),
        "tags": [{"name": name, "description": text} for name, text in tags.items() if name in used_tags],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def document() -> Any:
    shared = services()
    return jsonify(build_spec(shared.document_parts, server_url=shared.config.public_base_url,
                              deposit_addresses=shared.config.deposit_key is not None))
