"""The sandbox network's part of /openapi.json: its answers' fields and request bodies as named schemas (in every
network's document, as they always were), and its routes (only where they exist). The composition root plugs it in
(app.py); the document knows nothing of the sandbox otherwise."""
from __future__ import annotations

from typing import Any

from ledger.serialize import object_schema, ref
from sandbox.api import INBOX_QUERY, PAY, SANDBOX_DELIVERY, SANDBOX_TRANSFER, TRANSFER
from web.openapi import (
    BAD_INPUT,
    BODY_RULES,
    DATABASE_DOWN,
    NOT_FOUND,
    PAYMENT_ID,
    Part,
    json_content,
    list_of,
    parameters,
    response,
    secured,
    with_body,
)
from web.validation import body_schema

SANDBOX_ONLY = "Sandbox network only (TRON_NETWORK=sandbox; on every other network the route does not exist). "
SENT = response("Sent: mined into the next block, found by the watcher once solidified", ref("SandboxTransfer"))


def document_part(routes: bool) -> Part:
    """The sandbox's part of the document: its schemas always, its paths when its `routes` are served. The field
    tables are the routes' own (sandbox/api.py)."""
    return Part(
        paths=sandbox_paths() if routes else {},
        components={
            "DeliveryList": list_of("deliveries", "SandboxDelivery"),
            "SandboxPay": body_schema(PAY, BODY_RULES),
            "SandboxTransferRequest": body_schema(TRANSFER, BODY_RULES),
            "SandboxTransfer": object_schema(SANDBOX_TRANSFER),
            "SandboxDelivery": object_schema(SANDBOX_DELIVERY),
        },
        operations=OPERATIONS,
        tags={"sandbox": "The simulated chain of TRON_NETWORK=sandbox"},
    )


OPERATIONS = {
    ("/pay/{token}/simulate", "post"): ("simulateCheckoutPayment", "sandbox"),
    ("/sandbox/payments/{payment_id}/pay", "post"): ("sandboxPayPayment", "sandbox"),
    ("/sandbox/transfers", "post"): ("sandboxSendTransfer", "sandbox"),
    ("/sandbox/inbox", "post"): ("sandboxReceiveWebhook", "sandbox"),
    ("/sandbox/inbox", "get"): ("sandboxListInbox", "sandbox"),
}


def sandbox_paths() -> dict[str, Any]:
    return {
        "/sandbox/payments/{payment_id}/pay": {
            "post": with_body(secured({
                "summary": SANDBOX_ONLY + "Pay a payment on the sandbox chain, from a random sender",
                "parameters": [PAYMENT_ID],
                "requestBody": {"required": False, "description": "Optional. " + BODY_RULES,
                                **json_content(ref("SandboxPay"))},
                "responses": {
                    "202": SENT,
                    "404": NOT_FOUND,
                    "409": response("nothing_remaining: the payment has its whole amount; send amount_usdt",
                                    ref("Error")),
                },
            })),
        },
        "/sandbox/transfers": {
            "post": with_body(secured({
                "summary": SANDBOX_ONLY + "Send any transfer on the sandbox chain (unmatched, fake-token, reverted, "
                                          "late)",
                "requestBody": {"required": True, "description": BODY_RULES,
                                **json_content(ref("SandboxTransferRequest"))},
                "responses": {"202": SENT},
            })),
        },
        "/sandbox/inbox": {
            "post": with_body({
                "summary": SANDBOX_ONLY + "The built-in webhook receiver (no API key: the Standard Webhooks signature, "
                                          "made with this service's signing secret, is checked instead)",
                "requestBody": {"required": True, "description": "A webhook as this service sends it",
                                **json_content({"type": "object"})},
                "responses": {
                    "200": response("Verified and kept", ref("SandboxDelivery")),
                    "400": BAD_INPUT,
                    "401": response("invalid_signature: the signature does not verify with this service's secret",
                                    ref("Error")),
                    "503": DATABASE_DOWN,
                },
            }),
            "get": secured({
                "summary": SANDBOX_ONLY + "The webhooks the built-in receiver verified and kept, newest first",
                "parameters": parameters(INBOX_QUERY),
                "responses": {"200": response("A page of deliveries", ref("DeliveryList"))},
            }),
        },
        "/pay/{token}/simulate": {
            "post": {
                "summary": SANDBOX_ONLY + "The checkout page's \"simulate payment\": pays the remaining amount",
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"},
                                "description": "The token of the payment's checkout_url"}],
                "responses": {
                    "202": SENT,
                    "404": response("No payment has this token", ref("Error")),
                    "409": response("nothing_remaining: the payment has its whole amount", ref("Error")),
                    "503": DATABASE_DOWN,
                },
            },
        },
    }
