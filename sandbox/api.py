"""The sandbox network's routes (registered on TRON_NETWORK=sandbox only; a JSON 404 on every other network): money
sent on the sandbox chain, for a payment or to any address, and the built-in webhook receiver. What they send is
mined like any transfer (sandbox/chain.py) and found by the watcher through its usual path: nothing here credits a
payment."""
from __future__ import annotations

import json
import logging
from decimal import Decimal
from operator import attrgetter
from typing import Any
from urllib.parse import quote

from flask import Blueprint, g, jsonify, redirect, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.money import format_amount
from infra.times import iso, iso_ms
from ledger.checkout import find_by_token
from ledger.serialize import AMOUNT, BOOLEAN, INTEGER, STRING, TIME, Out, column, optional_id, render
from models import Payment, SandboxDelivery
from sandbox.chain import TOKENS, send_transfer
from sandbox.inbox import InvalidSignature, store, verify
from web import validation as v
from web.api import check_request_body, event_payment_id, filtered, json_body, load_payment, require_api_key
from web.errors import ApiError
from web.paging import Keyset, limit_field, number_key
from web.services import services
from web.validation import Field

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")  # the page's own form post

logger = logging.getLogger(__name__)

bp = Blueprint("sandbox", __name__)

SIMULATE_ENDPOINT = "sandbox.simulate"


def optional_amount(value: Any) -> Decimal | None:
    return None if value is None else v.amount(value, "amount_usdt")


def token_kind(value: Any) -> str:
    return v.one_of(value, TOKENS, "token") or "usdt"


PAY = (Field("amount_usdt", {**v.AMOUNT_SCHEMA, "description": (
    "Default: the payment's remaining amount. " + v.AMOUNT_SCHEMA["description"])}, optional_amount),)
TRANSFER = (
    Field("to", {**v.ADDRESS_SCHEMA, "description": "The recipient: " + v.ADDRESS_SCHEMA["description"]},
          lambda value: v.wallet_address(value, "to"), required=True),
    Field("amount_usdt", v.AMOUNT_SCHEMA, lambda value: v.amount(value, "amount_usdt"), required=True),
    Field("token", {"enum": list(TOKENS), "default": "usdt",
                    "description": "usdt: the sandbox's USDT; fake: a token calling itself USDT at another contract"},
          token_kind),
    Field("reverted", {"type": "boolean", "default": False,
                       "description": "true: the transaction fails on chain (receipt REVERT); it pays nothing"},
          lambda value: v.boolean(value, "reverted")),
)
DELIVERIES = Keyset((number_key(SandboxDelivery.id),), newest_first=True)
INBOX_QUERY = (
    limit_field(),
    DELIVERIES.field("cursor", "Exactly a next_cursor value returned by this endpoint (anything else is a 400)"),
    Field("payment_id", v.UUID_SCHEMA, event_payment_id, description="Only the webhooks about this payment"),
)
# What the sandbox's routes answer (named in /openapi.json by sandbox/document.py).
SANDBOX_TRANSFER = (
    column("transaction_hash", STRING),
    Out("from", STRING, attrgetter("from_address")),
    Out("to", STRING, attrgetter("to_address")),
    column("contract", STRING),
    Out("token", {"enum": ["usdt", "fake"]}, None),
    Out("amount_usdt", AMOUNT, lambda t: format_amount(t.amount_usdt)),
    column("reverted", BOOLEAN),
    Out("sent_at", TIME, lambda t: iso_ms(t.sent_at_ms)),
)
SANDBOX_DELIVERY = (
    column("id", INTEGER),
    column("webhook_id", STRING),
    column("type", STRING),
    Out("payment_id", {"type": ["string", "null"], "format": "uuid"}, lambda d: optional_id(d.payment_id)),
    Out("webhook_timestamp", TIME, lambda d: iso_ms(d.webhook_timestamp * 1000)),
    Out("received_at", TIME, lambda d: iso(d.received_at)),
    Out("signature_verified", BOOLEAN, lambda d: True),
    Out("event", {"type": "object", "description": "the webhook's body as it arrived"}, lambda d: json.loads(d.body)),
)


@bp.before_request
def body_rules() -> None:
    """The API's body rules, except for the checkout page's form post."""
    if request.endpoint != SIMULATE_ENDPOINT:
        check_request_body()


def optional_body(fields: tuple[Field, ...]) -> dict[str, Any]:
    """An optional JSON body of these fields: nothing sent reads as every field absent."""
    return v.read_body(fields, json_body() if g.raw_body else {})


def pay_payment(session: Session, payment: Payment, amount: Decimal | None) -> dict[str, Any]:
    """Send ``amount`` (default: what the payment still awaits) to the payment's wallet, from a random sender."""
    if amount is None:
        amount = payment.expected_amount_usdt - payment.received_amount_usdt
        if amount <= 0:
            raise ApiError("nothing_remaining", "This payment has received its whole amount; send amount_usdt to "
                                                "pay it more.", "amount_usdt", status=409)
    sent = send_transfer(session, services().config, payment.wallet_address, amount)
    logger.info("sandbox: paid %s to payment %s", amount, payment.id, extra={"payment": payment.id})
    return render(SANDBOX_TRANSFER, sent, token="usdt")


@bp.post("/sandbox/payments/<payment_id>/pay")
@require_api_key
def pay(payment_id: str) -> Any:
    given = optional_body(PAY)
    with services().db.transaction() as session:
        body = pay_payment(session, load_payment(session, payment_id), given["amount_usdt"])
    return jsonify(body), 202


def simulate_path(token: str) -> str:
    """Where the checkout page of `token` posts its "simulate payment" button (plugged into the page by app.py)."""
    return f"/pay/{token}/simulate"


@bp.post("/pay/<token>/simulate")
def simulate(token: str) -> Any:
    """The checkout page's "simulate payment" button: the remaining amount, as /sandbox/payments/<id>/pay sends it.
    The page's plain form post is sent back to the page (303), which then shows the payment as it goes."""
    with services().db.transaction() as session:
        payment = find_by_token(session, token)
        if payment is None:
            raise ApiError("not_found", "No payment has this checkout link.", status=404)
        body = pay_payment(session, payment, None)
    if request.mimetype in FORM_TYPES:
        lang = request.form.get("lang", "")
        return redirect(f"/pay/{token}" + (f"?lang={quote(lang)}" if lang else ""), code=303)
    return jsonify(body), 202


@bp.post("/sandbox/transfers")
@require_api_key
def transfer() -> Any:
    given = v.read_body(TRANSFER, json_body())
    with services().db.transaction() as session:
        sent = send_transfer(session, services().config, given["to"], given["amount_usdt"], token=given["token"],
                             reverted=given["reverted"])
        body = render(SANDBOX_TRANSFER, sent, token=given["token"])
    return jsonify(body), 202


@bp.post("/sandbox/inbox")
def receive() -> Any:
    """No API key: the service's own webhooks arrive here, proven by their signature."""
    with services().db.transaction() as session:
        try:
            event = verify(session, services().config, g.raw_body, request.headers)
        except InvalidSignature as exc:
            raise ApiError("invalid_signature", f"Refused: {exc}.", status=401) from None
        body = render(SANDBOX_DELIVERY, store(session, request.headers, event))
    return jsonify(body)


@bp.get("/sandbox/inbox")
@require_api_key
def inbox() -> Any:
    given = v.read_fields(INBOX_QUERY, request.args)
    query = filtered(select(SandboxDelivery), given, payment_id=SandboxDelivery.payment_id)
    with services().db.Session() as session:
        page = DELIVERIES.page(session, query, given["limit"], given["cursor"])
    return jsonify({"deliveries": [render(SANDBOX_DELIVERY, d) for d in page.rows], "next_cursor": page.next_cursor})
